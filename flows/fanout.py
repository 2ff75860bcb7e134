"""Fanning a batch out over a Prefect work pool: K child flow runs of `extract-shard`, watched to the end.

The parent (`extract_batch` with `workers = K`) starts one child flow run per share with
`run_deployment(..., timeout=0)`, so any worker of the pool runs it (process, Docker,
Kubernetes, ECS alike), then watches the children's states while its merger reads their
segments. A child that ends Crashed (its worker killed, its machine gone: marked so by the
automation `ensure_crash_detection` installs) is started again for the same share, up to `MAX_STARTS` runs;
the new run skips what the share's segments hold. A child that fails (it cannot reach the
source or destination, or refuses a configuration it sees differently) is not started again:
its documents get a `worker` error with the child's message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.logging import get_run_logger
from pydantic import BaseModel

from blocks.errors import BatchRefused
from blocks.local import LocalDirectory, LocalFolder
from blocks.models import DocumentRef, DocumentResult, ErrorKind
from flows.setup import BatchSetup

SHARD_FLOW = "extract-shard"
SHARD_DEPLOYMENT = f"{SHARD_FLOW}/{SHARD_FLOW}"
MAX_STARTS = 3  # runs of one share: the first, and two more after crashes
POLL_S = 1.0  # how often the parent reads its children's states (one API call for all of them)


class ShareRun(BaseModel):
    """One share's child flow runs, newest last, and how the share ended."""

    share: int
    runs: list[str] = []
    state: str = "SCHEDULED"
    message: str | None = None

    @property
    def failed(self) -> bool:
        return self.state not in ("COMPLETED",)


def shard_deployment(pool: str) -> str:
    """The `extract-shard` deployment to start children of: the declared one, or (with `pool`,
    when that one serves another pool) a copy of it on `pool`, made once and reused.

    Refuses, before any work, a batch whose deployment or pool does not exist."""
    with get_client(sync_client=True) as client:
        try:
            declared = client.read_deployment_by_name(SHARD_DEPLOYMENT)
        except ObjectNotFound:
            raise BatchRefused(
                f"workers > 0 needs the {SHARD_DEPLOYMENT!r} deployment: run `prefect deploy --all --prefect-file "
                "deployments.yaml` in the repository (see README, Fan-out)"
            ) from None
        if not pool or declared.work_pool_name == pool:
            return SHARD_DEPLOYMENT
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            raise BatchRefused(f"work pool {pool!r} does not exist (prefect work-pool ls)") from None
        name = f"{SHARD_FLOW}/{pool}"
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            client.create_deployment(
                flow_id=declared.flow_id, name=pool, work_pool_name=pool, entrypoint=declared.entrypoint, path=declared.path,
                pull_steps=declared.pull_steps, job_variables=declared.job_variables, tags=declared.tags,
                parameter_openapi_schema=declared.parameter_openapi_schema, description=declared.description,
            )
        return name


CRASH_AUTOMATION = "docbatch: mark silent shares crashed"
# A share's flow run silent for 3 heartbeat periods is crashed, as in Prefect's own recipe (three
# missed heartbeats): 90 s at the shortest period (30 s). 1.5 periods crashed a live share once
# here, its heartbeat event late on a loaded 2-core machine, and a false crash makes the parent
# start a second child beside one that is still extracting.
SILENCE_FACTOR = 3.0


def ensure_crash_detection() -> None:
    """Install (once; again if its window changed) the automation that marks a share's flow run
    Crashed when its heartbeats stop: its worker killed, its machine gone.

    Every flow run sends `prefect.flow-run.heartbeat` events (`PREFECT_FLOWS_HEARTBEAT_FREQUENCY`,
    180 s by default, 30 at least); a process that is gone sends none, and without this Prefect
    would show its run Running forever. This is Prefect's own documented recipe for such
    "zombie" runs (a proactive trigger and a change-flow-run-state action), limited to flow
    runs tagged `docbatch-share`; the parent then sees Crashed and starts the share again. The
    window is `SILENCE_FACTOR` times this process's heartbeat period: workers must use
    the same setting (README, Fan-out). (Prefect sends one more heartbeat after a run ends, so
    the trigger also fires on finished runs, a window later: the action then fails harmlessly,
    "already in terminal state", logged by the server as a warning.)
    """
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.settings import get_current_settings

    within = timedelta(seconds=SILENCE_FACTOR * (get_current_settings().flows.heartbeat_frequency or 180))
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(CRASH_AUTOMATION)
        if any(getattr(a.trigger, "within", None) == within for a in existing):
            return
        for automation in existing:
            client.delete_automation(automation.id)
    Automation(
        name=CRASH_AUTOMATION,
        description="docbatch fan-out: a share's flow run that stopped sending heartbeats is marked Crashed, so its batch starts it again.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match_related={"prefect.resource.id": "prefect.tag.docbatch-share"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within,
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED, message=f"no heartbeat for {within.total_seconds():.0f} s: its worker or machine is gone")],
    ).create()


def cancel_earlier_shares(folder: str, output_dir: str, run: str) -> int:
    """Cancel the unfinished child flow runs an earlier run of this batch left (its parent was
    killed; `--resume` goes on in the same folder): they would extract documents again beside
    the new children. Returns how many were cancelled."""
    from prefect.client.schemas.filters import FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType
    from prefect.states import Cancelling

    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED]
    cancelled = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["docbatch-share"]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished)),
        ))
        for child in runs:
            given = child.parameters
            if given.get("folder") == folder and given.get("output_dir") == output_dir and given.get("run") != run:
                client.set_flow_run_state(child.id, Cancelling(message="its batch was resumed by a new run"), force=True)
                cancelled += 1
    return cancelled


class FanOut:
    """Starts a batch's child flow runs and watches them until every share has ended."""

    def __init__(self, deployment: str, shares: int, parameters: Callable[[int], dict[str, Any]], batch_name: str) -> None:
        self.deployment = deployment
        self.parameters = parameters
        self.batch_name = batch_name
        self.shares = [ShareRun(share=k) for k in range(shares)]

    def _start(self, share: ShareRun) -> None:
        run = run_deployment(
            self.deployment, parameters=self.parameters(share.share), timeout=0, tags=["docbatch", "docbatch-share"],
        )
        share.runs.append(str(run.id))
        share.state, share.message = "SCHEDULED", None

    def start(self) -> None:
        ensure_crash_detection()
        for share in self.shares:
            self._start(share)

    def wait(self, poll_s: float = POLL_S) -> list[ShareRun]:
        """Watch the children until each share completed or failed for good; returns the shares."""
        logger = get_run_logger()
        active = {share.runs[-1]: share for share in self.shares}
        with get_client(sync_client=True) as client:
            while active:
                runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in active])))
                for run in runs:
                    share = active[str(run.id)]
                    state = run.state
                    if state is None:
                        continue
                    share.state = state.type.value
                    if not state.is_final():
                        continue
                    del active[str(run.id)]
                    share.message = state.message
                    if state.type.value == "CRASHED" and len(share.runs) < MAX_STARTS:
                        logger.warning(
                            "Share %d of %d: its flow run %s crashed (%s); starting it again (run %d of at most %d)",
                            share.share + 1, len(self.shares), run.id, state.message or "no message", len(share.runs) + 1, MAX_STARTS,
                        )
                        self._start(share)
                        active[share.runs[-1]] = share
                    elif state.is_completed():
                        logger.info("Share %d of %d completed (flow run %s)", share.share + 1, len(self.shares), run.id)
                    else:
                        logger.warning("Share %d of %d ended %s: %s", share.share + 1, len(self.shares), share.state, state.message)
                if active:
                    time.sleep(poll_s)
        return self.shares


def plan_fan_out(setup: BatchSetup, workers: int, work_pool: str, shared_path: bool) -> FanOutPlan:
    """Check that a batch can fan out, before any work: its source and destination must be
    reachable from every worker, and the `extract-shard` deployment must exist."""
    local = [what for what, end in (("source", setup.src), ("output folder", setup.destination)) if isinstance(end, (LocalDirectory, LocalFolder))]
    if local and not shared_path:
        raise BatchRefused(
            f"workers > 0 runs the batch on other workers, which cannot see this machine's {' and '.join(local)} "
            f"({', '.join(setup.source if w == 'source' else setup.output_dir for w in local)}): use S3 (s3://bucket/prefix) "
            "or a saved S3 block, or set shared_path (--shared-path) if every worker sees the same path"
        )
    return FanOutPlan(deployment=shard_deployment(work_pool), workers=workers, setup=setup)


def shared_spec(spec: str) -> str:
    """A local path made absolute: a shared path is the same on every worker only so (each
    starts in its own folder); an S3 URI or a saved block's name is left as it is."""
    from blocks.resolve import looks_like_block_name

    spec = spec.strip()
    if not spec or spec.startswith("s3://") or looks_like_block_name(spec):
        return spec
    return os.path.abspath(os.path.expanduser(spec.removeprefix("file://")))


@dataclass
class FanOutPlan:
    """A checked fan-out: where the children come from and what each is told."""

    deployment: str
    workers: int
    setup: BatchSetup

    def run(self, todo: list[DocumentRef], *, run: str, folder: str, name: str, max_concurrency: int, key: str, label: str) -> dict[int, DocumentResult]:
        """Write the listing, start the children, wait for them; the rows of documents whose
        share failed for good (only those its segments do not hold are used)."""
        from flows.shard import share_of
        from tasks.journal import LISTING_NAME
        from tasks.listing import write_listing

        if not todo:
            return {}
        setup = self.setup
        write_listing(setup.destination, todo, folder, LISTING_NAME)
        shares = min(self.workers, len(todo))
        extraction = setup.extraction.model_dump(mode="json")

        def parameters(share: int) -> dict[str, Any]:
            return {
                "source": setup.source, "output_dir": setup.output_dir, "folder": folder, "run": run, "share": share,
                "shares": shares, "batch_key": key, "batch_name": name, "include": setup.include, "exclude": setup.exclude,
                "recursive": setup.recursive, "max_concurrency": max_concurrency, "extraction": extraction,
            }

        if cancelled := cancel_earlier_shares(folder, setup.output_dir, run):
            get_run_logger().info("Cancelled %d unfinished share run(s) of this batch's interrupted run", cancelled)
        get_run_logger().info("Fanning out over %s: %d share(s) of about %d document(s)", self.deployment, shares, -(-len(todo) // shares))
        fan = FanOut(self.deployment, shares, parameters, name)
        fan.start()
        lost: dict[int, DocumentResult] = {}
        for share in fan.wait():
            if share.failed:
                why = f"share {share.share + 1} of {shares} ended {share.state.lower()} after {len(share.runs)} run(s): {share.message or 'no message'}"
                for ref in share_of(todo, share.share, shares):
                    lost[ref.index] = DocumentResult(ref=ref, status="failed", error=why, error_kind=ErrorKind.worker, error_transient=True, extractor=label)
        return lost
