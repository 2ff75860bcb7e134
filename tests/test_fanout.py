"""A batch fanned out over a work pool: a real `prefect server`, two process workers in their own
folders, moto's S3 server as source and destination (nothing local is shared by accident)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.conftest import ROOT
from tests.prefect_server import PrefectServer, _descendants
from tests.s3_server import REGION, s3_endpoint  # noqa: F401 - a fixture, used by name

POOL = "docbatch-process"
CLI = [sys.executable, "-c", "import tests.counting; from flows.cli import main; main()"]
HEARTBEAT_S = 30  # Prefect's shortest: a killed worker's share is marked Crashed 90 s after its last one
VOLATILE = {"duration_ms", "attempts"}


def s3_env(endpoint: str) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": "AKIAFANOUT", "AWS_SECRET_ACCESS_KEY": "fan-out-secret", "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION}


@pytest.fixture(scope="module")
def cluster(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server, the deployments of deployments.yaml, two workers `w1` and `w2`, and a counting extractor block."""
    calls = tmp_path_factory.mktemp("fanout") / "calls.txt"
    hold = calls.with_name("hold.txt")
    with PrefectServer() as server:
        server.prefect("work-pool", "create", POOL, "--type", "process", check=True)
        deployed = server.prefect("deploy", "--all", "--prefect-file", "deployments.yaml", cwd=ROOT, env={"PWD": str(ROOT)})
        assert deployed.returncode == 0, f"prefect deploy failed:\n{deployed.stdout}\n{deployed.stderr}"
        ingest = server.api("GET", "/deployments/name/ingest-inbox/ingest-inbox")
        server.api("PATCH", f"/deployments/{ingest['id']}", json={"paused": True})  # no scheduled runs in the checkout
        env = {
            **s3_env(s3_endpoint),
            "PYTHONPATH": str(ROOT),
            "DOCBATCH_BLOCK_MODULES": "tests.counting",  # the test's extractor block type, in the flow run's process
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        }
        workers = {}
        for name in ("w1", "w2"):
            folder = tmp_path_factory.mktemp(f"worker-{name}")  # each in its own folder: nothing local shared
            # --limit 1: one share per worker, as one would run one per machine
            workers[name] = server.start_worker(POOL, "--name", name, "--limit", "1", cwd=folder, env={**env, "DOCBATCH_TEST_WORKER": name})
        block = f"fanout-{uuid.uuid4().hex[:8]}"
        saved = subprocess.run(
            [sys.executable, "-c", "from tests.counting import CountingExtractor\n"
             f"CountingExtractor(calls_file={str(calls)!r}, latency_ms=150).save({block!r})\n"
             f"CountingExtractor(calls_file={str(calls)!r}, latency_ms=150, hold_file={str(hold)!r}).save({block + '-held'!r})"],
            cwd=ROOT, env=server.env, capture_output=True, text=True, timeout=120,
        )
        assert saved.returncode == 0, saved.stderr
        yield {"server": server, "workers": workers, "env": {**server.env, **env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S)},
               "extractor": f"test-counting-extractor/{block}", "held_extractor": f"test-counting-extractor/{block}-held", "hold": hold, "calls": calls}


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")


def documents(s3: Any, count: int) -> tuple[str, list[str]]:
    """`count` documents in a new bucket, named after it: the calls file is shared by the module's tests."""
    bucket = f"fan-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(Bucket=bucket)
    names = [f"{bucket}-{n:03d}.txt" for n in range(count)]
    for name in names:
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=f"invoice {name}\n".encode())
    return bucket, names


def calls(path: Path) -> list[tuple[str, str]]:
    """(worker, document) of every extraction so far."""
    if not path.exists():
        return []
    return [(line.split(" ", 1)[0].split(":")[0], line.split(" ", 1)[1]) for line in path.read_text().splitlines()]


def run_cli(cluster: dict[str, Any], *args: str, timeout: float = 600, meanwhile: Callable[[], None] | None = None) -> dict[str, Any]:
    """`docbatch run ... --json`; `meanwhile` is called every 0.1 s while it runs."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        cli = subprocess.Popen([*CLI, "run", *args, "--json"], cwd=ROOT, env=cluster["env"], stdout=out, stderr=err, text=True)
        deadline = time.monotonic() + timeout
        while cli.poll() is None and time.monotonic() < deadline:
            if meanwhile:
                meanwhile()
            time.sleep(0.1)
        if cli.poll() is None:
            cli.kill()
            cli.wait()
            pytest.fail(f"docbatch run did not end in {timeout} s")
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    assert cli.returncode == 0, f"{stderr[-4000:]}\n{cluster['server'].error_lines()}"
    assert "Traceback" not in stderr, stderr[-4000:]
    return json.loads(stdout)


def share_runs(server: PrefectServer, folder: str) -> list[dict[str, Any]]:
    runs = server.api("POST", "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["docbatch-share"]}}, "limit": 200})
    return [run for run in runs if run["parameters"].get("folder") == folder]


def worker_of(run: dict[str, Any]) -> str | None:
    """The name of the worker that ran a flow run: the label a worker sets before it submits one."""
    return (run.get("labels") or {}).get("prefect.worker.name")


def prefect_event_lost(line: str) -> bool:
    """Prefect's own events client giving up on one event after ten reconnections.

    The worker process's `EventsWorker` logs it when the test's server (SQLite, on 2 cores shared
    with both workers, their flow runs and moto) does not answer its websocket for ~10 s: a lost
    worker event (e.g. `prefect.worker.submitted-flow-run`), nothing of the batch's. Seen once
    in CI under load; it is not docbatch's to fix, and every other ERROR line still fails the test.
    """
    return "prefect._internal.concurrency - Service 'EventsWorker' failed to process item" in line


def comparable(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in result.items() if k not in VOLATILE} for result in report["results"]]


@pytest.mark.server
def test_a_batch_fans_out_over_two_workers_and_reports_as_one_process_would(cluster: dict[str, Any], s3: Any) -> None:
    bucket, names = documents(s3, 30)
    base = [f"s3://{bucket}/in", "--extractor", cluster["extractor"], "--concurrency", "2", "--format", "csv", "--format", "jsonl"]
    fanned = run_cli(cluster, *base, "--output", f"s3://{bucket}/fan", "--workers", "2", "--name", "fan")
    here = run_cli(cluster, *base, "--output", f"s3://{bucket}/here", "--name", "here")

    assert fanned["status"] == "completed" and [r["ref"]["name"] for r in fanned["results"]] == names
    assert comparable(fanned) == comparable(here)  # the same results, in the same order
    folder = fanned["output_dir"].rstrip("/").rsplit("/", 1)[1]
    runs = share_runs(cluster["server"], folder)
    assert len(runs) == 2 and {run["state"]["type"] for run in runs} == {"COMPLETED"}
    assert {worker_of(run) for run in runs} == {"w1", "w2"}, [run["name"] for run in runs]
    extracted = [name for worker, name in calls(cluster["calls"]) if name in names]
    assert sorted(extracted) == sorted(names * 2)  # once fanned out, once here: never twice in a batch
    by_worker = {worker for worker, name in calls(cluster["calls"]) if name in names and worker in ("w1", "w2")}
    assert by_worker == {"w1", "w2"}
    # One set of exports, no listing or segment left behind, in input order.
    stored = sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket, Prefix="fan/")["Contents"])
    assert [key.rsplit("/", 1)[1] for key in stored] == ["documents.csv", "documents.jsonl", "report.json"]
    lines = s3.get_object(Bucket=bucket, Key=stored[1])["Body"].read().decode().splitlines()
    assert [json.loads(line)["ref"]["name"] for line in lines] == names
    errors = {
        log: [line for line in lines if not prefect_event_lost(line)]
        for log, lines in cluster["server"].error_lines().items() if log.startswith("worker")
    }
    assert not any(errors.values()), errors  # a healthy fanned-out batch logs no ERROR on its workers


@pytest.mark.server
def test_a_share_whose_worker_cannot_load_the_extractor_fails_its_documents_clearly(cluster: dict[str, Any], s3: Any) -> None:
    """The parent knows the block class (tests.fakes), the workers do not: each share fails, is not
    started again, and its documents fail as `worker` with the child's reason."""
    bucket, names = documents(s3, 6)
    tag = uuid.uuid4().hex[:10]
    saved = subprocess.run([sys.executable, "-c", f"from tests.fakes import ScriptedExtractor; ScriptedExtractor(tag={tag!r}).save({tag!r})"],
                           cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stderr
    cli = [sys.executable, "-c", "import tests.counting, tests.fakes; from flows.cli import main; main()"]
    done = subprocess.run([*cli, "run", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--extractor", f"test-scripted-extractor/{tag}",
                           "--workers", "2", "--format", "csv", "--json"], cwd=ROOT, env=cluster["env"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]  # every document failed
    report = json.loads(done.stdout)
    assert report["status"] == "failed" and [r["ref"]["name"] for r in report["results"]] == names
    assert {r["error_kind"] for r in report["results"]} == {"worker"}
    assert all("of a type this docbatch does not know" in r["error"] and "DOCBATCH_BLOCK_MODULES" in r["error"] for r in report["results"])
    folder = report["output_dir"].rstrip("/").rsplit("/", 1)[1]
    assert sorted(run["state"]["type"] for run in share_runs(cluster["server"], folder)) == ["FAILED", "FAILED"]  # not started again
    assert "Share 1 of 2 ended FAILED" in done.stderr and "Traceback" not in done.stderr


def pids(path: Path, names: list[str]) -> dict[str, list[str]]:
    """Documents extracted by each flow run process (worker:pid) so far."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        who, doc = line.split(" ", 1)
        if doc in names:
            found.setdefault(who, []).append(doc)
    return found


@pytest.mark.server
def test_a_killed_parent_resumes_and_cancels_the_shares_it_left(cluster: dict[str, Any], s3: Any) -> None:
    server = cluster["server"]
    bucket, names = documents(s3, 100)
    args = ["run", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--extractor", cluster["held_extractor"],
            "--concurrency", "1", "--workers", "2", "--format", "csv", "--name", "killed parent"]
    parent = subprocess.Popen([*CLI, *args], cwd=ROOT, env=cluster["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and parent.poll() is None:
        going = pids(cluster["calls"], names)
        if len(going) == 2 and min(map(len, going.values())) >= 3:  # both shares under way
            os.kill(parent.pid, signal.SIGKILL)
            # The orphaned shares extract nothing more until they are cancelled: however slowly the
            # resumed run starts, they are still running when it looks for them.
            cluster["hold"].write_text("".join(f"{who}\n" for who in going))
            break
        time.sleep(0.05)
    assert parent.wait(timeout=30) == -signal.SIGKILL, "the batch ended before it could be killed"
    old = set(pids(cluster["calls"], names))


    def release_once_cancelling() -> None:
        """The held shares go on (and end) once the resumed run has asked for their cancellation:
        held, a process would not stop on the worker's SIGTERM (its extraction thread keeps it alive)."""
        if not cluster["hold"].read_text():
            return  # released: no more API calls
        runs = server.api("POST", "/flow_runs/filter", json={"flow_runs": {"tags": {"all_": ["docbatch-share"]}}, "limit": 200})
        mine = [run for run in runs if run["parameters"].get("source") == f"s3://{bucket}/in"]
        if any(run["state"]["type"] in ("CANCELLING", "CANCELLED") for run in mine):
            cluster["hold"].write_text("")

    try:
        report = run_cli(cluster, *args[1:], "--resume", meanwhile=release_once_cancelling)
    finally:
        cluster["hold"].write_text("")  # whatever happened, no share of this module stays held
    assert report["status"] == "completed" and [r["ref"]["name"] for r in report["results"]] == names
    taken = report["totals"]["resumed"]
    assert 0 < taken < len(names)
    new = [doc for who, docs in pids(cluster["calls"], names).items() if who not in old for doc in docs]
    # The resumed run extracted exactly the documents its checkpoint lacked, each once.
    assert len(new) == len(set(new)) == len(names) - taken
    folder = report["output_dir"].rstrip("/").rsplit("/", 1)[1]
    states = {(run["parameters"]["run"], run["state"]["type"]) for run in share_runs(server, folder)}
    assert len({run for run, _ in states}) == 2  # the killed parent's run and the resumed one
    assert sorted(state for _, state in states) == ["CANCELLED", "COMPLETED"], states  # the old shares were cancelled, not finished


@pytest.mark.server
def test_a_killed_worker_s_share_is_started_again_and_every_document_is_extracted_once(cluster: dict[str, Any], s3: Any) -> None:
    server, workers = cluster["server"], cluster["workers"]
    bucket, names = documents(s3, 40)
    args = [*CLI, "run", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--extractor", cluster["extractor"],
            "--concurrency", "1", "--workers", "2", "--format", "csv", "--name", "killed worker", "--json"]
    parent = subprocess.Popen(args, cwd=ROOT, env=cluster["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        victim, deadline = None, time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and parent.poll() is None:
            done = calls(cluster["calls"])
            for name in ("w1", "w2"):
                if sum(worker == name and doc in names for worker, doc in done) >= 4:
                    victim = name
                    break
            time.sleep(0.05)
        assert victim is not None, "no worker got going"
        process = workers[victim]
        tree = [(process.pid, 0), *_descendants(process.pid)]
        for pid, _ in tree:  # the worker and its flow run's process: as if its machine were gone
            os.kill(pid, signal.SIGKILL)
        before = [doc for worker, doc in calls(cluster["calls"]) if worker == victim and doc in names]
        recorded = set()
        time.sleep(3)  # the killed share's last lines are lost with it; what its segments hold is what counts
        for item in s3.list_objects_v2(Bucket=bucket, Prefix="out/").get("Contents", []):
            if "/segments/" in item["Key"]:
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
                recorded |= {json.loads(line)["ref"]["name"] for line in body.splitlines() if line.startswith('{"ref"')}
        out, err = parent.communicate(timeout=600)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, err[-4000:]
    report = json.loads(out)
    assert report["status"] == "completed" and [r["ref"]["name"] for r in report["results"]] == names
    extracted = [doc for worker, doc in calls(cluster["calls"]) if doc in names]
    assert set(extracted) == set(names)
    again = [doc for doc in set(before) & recorded if extracted.count(doc) > 1]
    assert not again, f"recorded in the killed share's segment, yet extracted again: {again}"
    folder = report["output_dir"].rstrip("/").rsplit("/", 1)[1]
    runs = share_runs(server, folder)
    assert sorted(run["state"]["type"] for run in runs) == ["COMPLETED", "COMPLETED", "CRASHED"], runs
    crashed = next(run for run in runs if run["state"]["type"] == "CRASHED")
    assert worker_of(crashed) == victim and "heartbeat" in crashed["state"]["message"]
    again = [run for run in runs if run["parameters"]["share"] == crashed["parameters"]["share"] and run is not crashed]
    assert [worker_of(run) for run in again] == [next(w for w in workers if w != victim)]  # the surviving worker took the share
    assert "crashed" in err and "starting it again" in err


def test_a_local_folder_is_refused_for_workers_unless_shared(prefect_api: str, tmp_path: Path, cli_env: dict[str, str]) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("invoice A-1\n")
    refused = subprocess.run([*CLI, "run", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--workers", "2"],
                             cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "cannot see this machine's source and output folder" in refused.stderr and "--shared-path" in refused.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    # Shared: no longer refused for the folders; the test's API has no extract-shard deployment, which is said.
    shared = subprocess.run([*CLI, "run", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--workers", "2", "--shared-path"],
                            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert shared.returncode == 2 and "extract-shard/extract-shard" in shared.stderr, shared.stderr[-3000:]
