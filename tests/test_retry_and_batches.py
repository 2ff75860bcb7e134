"""Retry-failed, the batch list, status tags and per-document failure events, against a real Prefect API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from flows.params import ExportSettings
from tests.conftest import ROOT, corpus

INVOICE = corpus("invoice2data", "compare", "coolblue1", "coolblue1.pdf")


def make_batch_folder(folder: Path) -> list[str]:
    folder.mkdir()
    shutil.copyfile(corpus("invoice2data", "compare", "Orlen", "Orlen.txt"), folder / "a-orlen.txt")
    (folder / "b-scan.pdf").write_bytes(INVOICE.read_bytes()[:2000])  # truncated: corrupt
    shutil.copyfile(corpus("invoice2data", "custom", "basic", "basic.txt"), folder / "c-basic.txt")
    return ["a-orlen.txt", "b-scan.pdf", "c-basic.txt"]


def failure_events(flow_run_id: str, timeout_s: float = 30.0) -> list[dict]:
    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(
                filter=EventFilter(
                    event=EventNameFilter(name=["docbatch.document.failed"]),
                    related=EventRelatedFilter(resources_in_roles=[("prefect.flow-run." + flow_run_id, "flow-run")]),
                ),
                limit=50,  # the client's default (100) is over the server's maximum
            )
        if page.events or time.monotonic() > deadline:
            return [event.payload for event in page.events]
        time.sleep(0.5)


def test_retry_failed_merges_in_input_order_and_batches_are_listed_by_status(prefect_api: str, tmp_path: Path) -> None:
    from prefect import get_client

    from flows.batch import extract_batch
    from flows.reports import list_batches
    from flows.retry import retry_failed

    names = make_batch_folder(tmp_path / "in")
    first = extract_batch(source=str(tmp_path / "in"), batch_name="retry me", export=ExportSettings(output_dir=str(tmp_path / "out")))
    assert first.status == "partially_failed" and first.flow_run_id
    assert [r.status for r in first.results] == ["succeeded", "failed", "succeeded"]
    events = failure_events(first.flow_run_id)
    assert [(e["file"], e["error_kind"], e["batch_name"]) for e in events] == [("b-scan.pdf", "corrupt", "retry me")]

    shutil.copyfile(INVOICE, tmp_path / "in" / "b-scan.pdf")  # the user fixed the file
    second = retry_failed(batch=first.flow_run_id)
    assert second.name == "retry me (retry)" and second.status == "completed"
    assert [r.ref.name for r in second.results] == names
    assert second.results[1].status == "succeeded" and second.results[1].pages == 1
    # The earlier successes were carried over, not extracted again.
    assert [second.results[i].model_dump() for i in (0, 2)] == [first.results[i].model_dump() for i in (0, 2)]
    assert second.output_dir != first.output_dir and Path(second.exports["documents.csv"]).is_file()
    assert Path(first.exports["report.json"]).is_file()  # the earlier batch is left as it was

    again = retry_failed(batch=second.exports["report.json"])  # by report path; nothing failed any more
    assert again.status == "completed" and [r.model_dump() for r in again.results] == [r.model_dump() for r in second.results]

    with get_client(sync_client=True) as client:
        assert "docbatch-status:partially_failed" in client.read_flow_run(first.flow_run_id).tags
        assert "docbatch-status:completed" in client.read_flow_run(second.flow_run_id).tags
    listed = {b.flow_run_id: b for b in list_batches(status="partially_failed", limit=50)}
    assert first.flow_run_id in listed and second.flow_run_id not in listed
    entry = listed[first.flow_run_id]
    assert entry.report == first.exports["report.json"] and entry.totals and entry.totals["failed"] == 1


def test_cli_batches_and_retry(cli_env: dict[str, str], tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "flows.cli"]
    make_batch_folder(tmp_path / "in")
    done = subprocess.run([*cli, "run", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--json"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    first = json.loads(done.stdout)
    listed = subprocess.run([*cli, "batches", "--status", "partially_failed", "--json", "--limit", "50"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert first["flow_run_id"] in {b["flow_run_id"] for b in json.loads(listed.stdout)}
    bad = subprocess.run([*cli, "batches", "--status", "meh"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--status must be" in bad.stderr
    retried = subprocess.run([*cli, "retry", first["exports"]["report.json"], "--json"], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert retried.returncode == 0, retried.stderr
    report = json.loads(retried.stdout)
    assert report["status"] == "partially_failed"  # the file is still broken: same failure, honestly reported
    assert report["results"][1]["error_kind"] == "corrupt" and report["results"][1]["attempts"] == 1
    missing = subprocess.run([*cli, "retry", str(tmp_path / "nowhere" / "report.json")], cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 3 and "no report.json" in missing.stderr and "Traceback" not in missing.stderr
