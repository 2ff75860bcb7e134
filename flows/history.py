"""Waiting until the Prefect server has recorded a batch's whole history.

Task run states reach the server as events that it persists in the background. A process that
exits right after its flow returns can stop a temporary server while it is still writing them:
the history is then incomplete and the server logs `Error flushing events` with a traceback.
Waiting here for every task run to be recorded in a final state closes that window.
"""

from __future__ import annotations

import time
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType

PAGE = 200
FINAL_STATES = {StateType.COMPLETED, StateType.FAILED, StateType.CANCELLED, StateType.CRASHED}


def recorded_task_runs(flow_run_id: str | UUID) -> tuple[int, int]:
    """(task runs the server knows for this flow run, of which in a final state)."""
    flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[UUID(str(flow_run_id))]))
    total = final = 0
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_task_runs(flow_run_filter=flow_filter, limit=PAGE, offset=total)
            total += len(page)
            final += sum(1 for run in page if run.state is not None and run.state.type in FINAL_STATES)
            if len(page) < PAGE:
                return total, final


def wait_for_history(flow_run_id: str | UUID, expected_task_runs: int, timeout_s: float = 30.0) -> bool:
    """True once the server holds `expected_task_runs` task runs of the flow run, all final."""
    deadline = time.monotonic() + timeout_s
    while True:
        total, final = recorded_task_runs(flow_run_id)
        if total >= expected_task_runs and final == total:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
