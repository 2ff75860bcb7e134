"""End to end: deployments.yaml deployed to a real server, run by a process worker."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import pytest

from tests.prefect_server import REPO_ROOT, PrefectServer

POOL = "docbatch-process"
DEPLOYMENT = "extract-batch/extract-batch"
RUN_TIMEOUT_S = 240
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _wait_for_final_state(server: PrefectServer, flow_run_id: str, worker) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    flow_run: dict = {}
    while time.monotonic() < deadline:
        flow_run = server.api("GET", f"/flow_runs/{flow_run_id}")
        if (flow_run.get("state") or {}).get("type") in FINAL_STATES:
            return flow_run
        assert worker.alive(), f"worker exited with code {worker.popen.returncode}\n{worker.tail()}"
        time.sleep(2)
    state = flow_run.get("state") or {}
    pytest.fail(f"flow run {flow_run_id} not finished after {RUN_TIMEOUT_S} s: {state.get('type')} {state.get('message')}")


@pytest.mark.server
def test_deployment_runs_examples_on_a_process_worker(tmp_path: Path) -> None:
    documents = REPO_ROOT / "examples" / "documents"
    expected_total = sum(1 for path in documents.rglob("*") if path.is_file())
    output_dir = tmp_path / "exports"
    batch_name = f"deployment test {uuid.uuid4().hex[:8]}"

    with PrefectServer() as server:
        server.prefect("work-pool", "create", POOL, "--type", "process", check=True)

        # As from a shell `cd`-ed into the repo root: the pull step's {{ $PWD }} resolves at deploy time.
        deployed = server.prefect(
            "deploy", "--all", "--prefect-file", "deployments.yaml", cwd=REPO_ROOT, env={"PWD": str(REPO_ROOT)}
        )
        assert deployed.returncode == 0, f"prefect deploy failed:\n{deployed.stdout}\n{deployed.stderr}"

        deployment = server.api("GET", f"/deployments/name/{DEPLOYMENT}")
        assert deployment["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO_ROOT)}}
        ]
        assert deployment["parameters"]["source"] == "examples/documents"
        assert set(deployment["tags"]) >= {"docbatch"}

        ingest = server.api("GET", "/deployments/name/ingest-inbox/ingest-inbox")
        schedule = ingest["schedules"][0]["schedule"]
        assert schedule["cron"] == "*/15 * * * *" and schedule["timezone"] == "Europe/Berlin"
        assert ingest["concurrency_limit"] == 1 or (ingest.get("global_concurrency_limit") or {}).get("limit") == 1
        retry = server.api("GET", "/deployments/name/retry-failed/retry-failed")
        assert "batch" in retry["parameter_openapi_schema"]["required"]
        # Keep the schedule from starting ingestion runs in the checkout while this test runs.
        server.api("PATCH", f"/deployments/{ingest['id']}", json={"paused": True})

        worker = server.start_worker(POOL)  # started outside the repo on purpose

        params = {"batch_name": batch_name, "max_concurrency": 2, "export": {"output_dir": str(output_dir)}}
        started = server.prefect("deployment", "run", DEPLOYMENT, "--params", json.dumps(params), check=True)
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", started.stdout)
        assert match, f"no flow run id in `prefect deployment run` output:\n{started.stdout}"
        flow_run_id = match.group(1)

        flow_run = _wait_for_final_state(server, flow_run_id, worker)
        state = flow_run["state"]
        assert state["type"] == "COMPLETED", f"{state['type']}: {state.get('message')}\n{worker.tail()}"
        assert flow_run["name"] == batch_name
        assert flow_run["parameters"]["max_concurrency"] == 2
        assert flow_run["parameters"]["batch_name"] == batch_name

        reports = list(output_dir.rglob("report.json"))
        assert len(reports) == 1, f"expected one report.json under {output_dir}, found {reports}"
        assert reports[0].parent.parent == output_dir
        assert reports[0].parent.name.endswith(f"-{flow_run_id[:8]}")  # <timestamp>-<slug>-<runid8>
        report = json.loads(reports[0].read_text())
        assert report["status"] == "partially_failed"  # examples include an AES-256 encrypted PDF
        assert report["totals"]["total"] == expected_total
        assert report["name"] == batch_name
        assert report["flow_run_id"] == flow_run_id

        artifacts = server.api("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
        keys = {artifact["key"] for artifact in artifacts}
        assert {"docbatch-summary", "docbatch-documents"} <= keys, keys

        errors = server.error_lines()
        if errors:  # not a failure, but worth seeing with -s / in the report
            print("ERROR lines in a successful run:", json.dumps(errors, indent=2))

    assert not server.survivors(), f"processes left running: {server.survivors()}"
