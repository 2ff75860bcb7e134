"""Scheduled ingestion for real: a `prefect server`, a process worker and a schedule that fires every few seconds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.prefect_server import REPO_ROOT, PrefectServer

pytestmark = pytest.mark.server
POOL = "docbatch-process"


def batch_reports(out: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(out.glob("*/report.json"))]


def wait_for(condition, timeout_s: float, what: str, server: PrefectServer) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            server.print_logs()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def test_a_schedule_runs_ingestion_twice_and_the_second_run_takes_only_the_new_file(tmp_path: Path) -> None:
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    for n in range(2):
        (inbox / f"inv-{n}.txt").write_text(f"Invoice no. A-{n}00\nTotal 10.00 EUR\n")
    project = tmp_path / "scheduled.yaml"
    project.write_text(json.dumps({  # JSON is YAML
        "name": "docbatch-scheduled-test",
        "prefect-version": "3.8.8",
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}],
        "deployments": [{
            "name": "scheduled-ingest",
            "entrypoint": "flows/ingest.py:ingest_inbox",
            "work_pool": {"name": POOL},
            "schedules": [{"interval": 5}],
            "concurrency_limit": {"limit": 1, "collision_strategy": "CANCEL_NEW"},
            "parameters": {"source": str(inbox), "settle_s": 0, "export": {"output_dir": str(out), "formats": ["csv"]}},
        }],
    }))
    server = PrefectServer()
    server.env["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "2"  # create the runs within seconds
    with server:
        server.prefect("work-pool", "create", POOL, "--type", "process", check=True)
        deployed = server.prefect("deploy", "--all", "--prefect-file", str(project), cwd=REPO_ROOT)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        server.start_worker(POOL, env={"PREFECT_WORKER_QUERY_SECONDS": "1"})

        wait_for(lambda: len(batch_reports(out)) >= 1, 180, "the first scheduled batch", server)
        (inbox / "inv-new.txt").write_text("Invoice no. A-999\nTotal 99.00 EUR\n")
        wait_for(lambda: len(batch_reports(out)) >= 2, 180, "a second scheduled batch", server)
        deployment = server.api("GET", "/deployments/name/ingest-inbox/scheduled-ingest")
        server.api("PATCH", f"/deployments/{deployment['id']}", json={"paused": True})

        def completed_runs() -> list[dict]:
            # Filtered by state on the server: the scheduler creates runs ahead of time, and an
            # unfiltered page of 50 could hold only scheduled or cancelled ones.
            return server.api("POST", "/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["COMPLETED"]}}},
                "limit": 50,
            })

        wait_for(lambda: len(completed_runs()) >= 2, 120, "two completed scheduled runs", server)
        completed = completed_runs()

    first, second = batch_reports(out)[:2]
    assert sorted(r["ref"]["name"] for r in first["results"]) == ["inv-0.txt", "inv-1.txt"]
    assert [r["ref"]["name"] for r in second["results"]] == ["inv-new.txt"]  # only the file added in between
    assert first["status"] == second["status"] == "completed"
    assert all(r["auto_scheduled"] for r in completed)  # started by the schedule, not by hand
