"""Batches from and to S3 through the real flow and CLI: moto's server over HTTP, a real Prefect API."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest

from blocks.aws import AwsCredentials
from blocks.s3 import S3Destination, S3Source
from flows.params import ExportSettings, ExtractionSettings
from tasks.journal import SEGMENTS
from tests.conftest import ROOT, corpus
from tests.s3_server import REGION, iam_authentication, s3_endpoint  # noqa: F401 - s3_endpoint is a fixture

SECRET = "s3cret/BATCH+key-7f3e1c9b"  # must never show anywhere
INVOICES = [
    corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf"),
    corpus("invoice2data", "compare", "Orlen", "Orlen.txt"),
    corpus("invoice2data", "custom", "basic", "basic.txt"),
]
CLI = [sys.executable, "-c", "import tests.counting; from flows.cli import main; main()"]


@pytest.fixture(scope="module")
def s3(s3_endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id="setup", aws_secret_access_key="setup")


def new_bucket(s3: Any) -> str:
    name = f"batch-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def upload_invoices(s3: Any, bucket: str, prefix: str) -> list[str]:
    names = []
    for path in INVOICES:
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
        names.append(path.name)
    s3.put_object(Bucket=bucket, Key=f"{prefix}/archive/", Body=b"")  # a console's folder marker: not a document
    return sorted(names)


def keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", ())]


def s3_env(endpoint: str, **extra: str) -> dict[str, str]:
    """boto3's default chain for `s3://` URIs: keys and the endpoint from the environment."""
    return {"AWS_ACCESS_KEY_ID": "AKIAENVTEST", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": REGION, **extra}


def test_s3_to_s3_through_saved_blocks_with_no_secret_anywhere(
    prefect_api: str, s3: Any, s3_endpoint: str, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect.artifacts import Artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

    from flows.batch import extract_batch

    bucket = new_bucket(s3)
    names = upload_invoices(s3, bucket, "inbox/may")
    credentials = AwsCredentials(aws_access_key_id="AKIABLOCKTEST", aws_secret_access_key=SECRET, region_name=REGION)
    suffix = uuid.uuid4().hex[:8]
    S3Source(bucket=bucket, prefix="inbox/may", endpoint_url=s3_endpoint, credentials=credentials).save(f"inbox-{suffix}")
    S3Destination(bucket=bucket, prefix="results", endpoint_url=s3_endpoint, credentials=credentials).save(f"results-{suffix}")

    caplog.set_level(logging.DEBUG)
    report = extract_batch(
        source=f"s3-source/inbox-{suffix}",
        batch_name="s3 batch",
        export=ExportSettings(output_dir=f"s3-destination/results-{suffix}"),
    )
    assert report.status == "completed", report.message
    assert [r.ref.name for r in report.results] == names
    assert all(r.ref.uri == f"s3://{bucket}/inbox/may/{r.ref.name}" for r in report.results)
    assert report.results[0].ref.fingerprint == s3.head_object(Bucket=bucket, Key="inbox/may/" + names[0])["ETag"].strip('"')
    assert report.output_dir and report.output_dir.startswith(f"s3://{bucket}/results/")
    folder_key = report.output_dir.removeprefix(f"s3://{bucket}/")
    published = keys(s3, bucket, folder_key)
    expected = {"report.json", "documents.csv", "documents.jsonl", "documents.json", "documents.xlsx", "documents.parquet", "review.html"}
    if any(r.fields.get("line_items") for r in report.results):  # invoices whose table was read
        expected.add("line_items.csv")
    assert {key.rsplit("/", 1)[1] for key in published} == expected  # no journal, no temporaries
    assert all(uri.startswith(f"s3://{bucket}/{folder_key}/") for uri in report.exports.values())

    def fetch(name: str) -> bytes:
        return s3.get_object(Bucket=bucket, Key=f"{folder_key}/{name}")["Body"].read()

    csv = pd.read_csv(io.BytesIO(fetch("documents.csv")))
    assert csv["file"].tolist() == names and (csv["status"] == "succeeded").all()
    assert json.loads(fetch("report.json"))["exports"] == report.exports

    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(report.flow_run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
        # Filtered by the server: unfiltered, the API's default page (200) holds only the session's
        # newest artifacts, which need not include all of this run's.
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    ours = [a for a in artifacts if a.flow_run_id == flow_run.id]
    assert {a.key for a in ours} >= {"docbatch-summary", "docbatch-documents", "docbatch-exports"}
    link = next(a for a in ours if a.key == "docbatch-exports")
    assert link.data and f"{s3_endpoint}/{bucket}/{folder_key}/report.json" in str(link.data)
    everything = [
        report.model_dump_json(), json.dumps(flow_run.parameters), caplog.text,
        *(log.message for log in logs), *(json.dumps(a.data, default=str) for a in ours),
        *(fetch(name).decode("utf-8", "replace") for name in expected if not name.endswith((".xlsx", ".parquet"))),
    ]
    assert not [text for text in everything if SECRET in text]
    assert Artifact  # imported for its side effect of registering artifact types with the client


def test_s3_uri_source_to_a_local_folder_with_the_default_chain(
    prefect_api: str, s3: Any, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.batch import extract_batch

    bucket = new_bucket(s3)
    names = upload_invoices(s3, bucket, "scans")
    s3.put_object(Bucket=bucket, Key="scans/empty.pdf", Body=b"")  # a real zero-byte document, not a marker
    for key, value in s3_env(s3_endpoint).items():
        monkeypatch.setenv(key, value)
    report = extract_batch(
        source=f"s3://{bucket}/scans", include=["*.pdf", "*.txt"], export=ExportSettings(output_dir=str(tmp_path / "out"), formats=["csv"])
    )
    assert report.status == "partially_failed"
    assert [r.ref.name for r in report.results] == sorted([*names, "empty.pdf"])
    empty = next(r for r in report.results if r.ref.name == "empty.pdf")
    assert empty.error_kind is not None and empty.error_kind.value == "empty"
    assert Path(report.exports["documents.csv"]).is_file()


@pytest.mark.parametrize(
    ("case", "code", "message"),
    [
        ("missing bucket", 3, "does not exist"),
        ("rejected credentials", 5, "rejected the credentials"),
        ("unreachable endpoint", 6, "cannot reach S3"),
    ],
)
def test_cli_refuses_before_any_work_with_one_line_and_a_distinct_exit_code(
    cli_env: dict[str, str], s3: Any, s3_endpoint: str, tmp_path: Path, case: str, code: int, message: str
) -> None:
    bucket = new_bucket(s3)
    upload_invoices(s3, bucket, "in")
    env = {**cli_env, **s3_env(s3_endpoint)}
    uri = f"s3://{bucket}/in"
    if case == "missing bucket":
        uri = f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/in"
    if case == "unreachable endpoint":
        import socket

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
    with iam_authentication(s3_endpoint) if case == "rejected credentials" else _nothing():
        done = subprocess.run(
            [*CLI, "run", uri, "--output", str(tmp_path / "out")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
        )
    assert done.returncode == code, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert "Beginning flow run" not in done.stderr  # refused before any flow run, so before any document
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.timeout(300)
def test_kill_9_then_resume_with_an_s3_destination(cli_env: dict[str, str], s3: Any, s3_endpoint: str, tmp_path: Path) -> None:
    from tests.counting import CountingExtractor

    bucket = new_bucket(s3)
    names = []
    for number in range(120):
        name = f"inv-{number:04d}.txt"
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=f"invoice INV-{number:04d}\n".encode())
        names.append(name)
    calls = tmp_path / "calls.txt"
    CountingExtractor(calls_file=str(calls), latency_ms=60).save("s3-crash-test", overwrite=True)
    env = {**cli_env, **s3_env(s3_endpoint)}
    args = [
        "run", f"s3://{bucket}/in", "--output", f"s3://{bucket}/out", "--name", "s3 crash",
        "--extractor", "test-counting-extractor/s3-crash-test", "--concurrency", "2", "--max-documents", "0",
    ]
    child = subprocess.Popen([*CLI, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    segments: list[str] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.poll() is None:
        segments = [k for k in keys(s3, bucket, "out/") if f"/{SEGMENTS}/" in k]
        if segments:  # the first checkpoint segment (the journal is uploaded every 2 s)
            os.kill(child.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    assert child.wait(timeout=30) == -signal.SIGKILL, "the batch ended before it could be killed"
    published = [k for k in keys(s3, bucket, "out/") if f"/{SEGMENTS}/" not in k]
    assert published == []  # no export looks complete after the crash

    lines: list[str] = []
    for key in sorted(k for k in keys(s3, bucket, "out/") if f"/{SEGMENTS}/" in k):
        lines += s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines()
    recorded = [json.loads(line)["ref"]["name"] for line in lines[1:]]  # after the header; segments hold whole lines
    assert 0 < len(recorded) < len(names)

    done = subprocess.run([*CLI, *args, "--resume", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["status"] == "completed" and report["totals"]["resumed"] == len(recorded)
    assert [r["ref"]["name"] for r in report["results"]] == names
    per_process: dict[str, list[str]] = {}
    for line in calls.read_text().splitlines():
        pid, name = line.split(" ", 1)
        per_process.setdefault(pid, []).append(name)
    second = list(per_process.values())[-1]
    assert sorted(second) == sorted(set(names) - set(recorded))
    final = keys(s3, bucket, "out/")
    assert not [k for k in final if f"/{SEGMENTS}/" in k]  # the checkpoint is gone once the report is published
    assert any(k.endswith("/report.json") for k in final)
