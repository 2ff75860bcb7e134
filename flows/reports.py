"""Finding earlier batches and their reports: by report location or by flow run id, through the Prefect API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel

from blocks.errors import SourceUnavailable
from blocks.models import BatchReport, BatchStatus, DocumentResult
from blocks.resolve import Destination, resolve_destination
from tasks.artifacts import LINK_KEY
from tasks.collect import STATUS_TAG

REPORT = "report.json"
_LINK = re.compile(r"^\[(?P<text>.*)\]\((?P<url>.*)\)$", re.DOTALL)


class BatchSummary(BaseModel):
    """One earlier batch as `docbatch batches` lists it."""

    name: str
    flow_run_id: str
    state: str
    status: BatchStatus | None
    started: str | None
    report: str | None
    totals: dict[str, Any] | None = None


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def report_location_of_run(flow_run_id: str) -> str | None:
    """Where a batch flow run published its report.json (its `docbatch-exports` link artifact)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]), key=ArtifactFilterKey(any_=[LINK_KEY])
            ),
            limit=1,
        )
    if not artifacts or not isinstance(artifacts[0].data, str):
        return None
    match = _LINK.match(artifacts[0].data.strip())
    return match.group("text") if match else None


def _split(location: str) -> tuple[str, str]:
    """`<destination>/<batch folder>/report.json` → (destination, batch folder)."""
    location = location.rstrip("/")
    if location.endswith("/" + REPORT):
        location = location[: -len(REPORT) - 1]
    parent, _, folder = location.rpartition("/")
    return parent or ".", folder


def load_report(batch: str) -> BatchReport:
    """An earlier batch's report: `batch` is a report.json path or URI, its batch folder, or its flow run id.

    For a flow run id, the run's own `export.output_dir` parameter says where to read (a saved
    destination block with its credentials, if that is what the batch used).
    """
    batch = batch.strip()
    destination: Destination
    if _is_uuid(batch):
        location = report_location_of_run(batch)
        if location is None:
            raise SourceUnavailable(f"flow run {batch} has no published report (not a finished docbatch batch?)")
        with get_client(sync_client=True) as client:
            parameters = client.read_flow_run(uuid.UUID(batch)).parameters
        output_dir = (parameters.get("export") or {}).get("output_dir") or _split(location)[0]
        destination = resolve_destination(output_dir)
        folder = _split(location)[1]
    else:
        parent, folder = _split(batch)
        destination = resolve_destination(parent)
    text = destination.read_text(folder, REPORT)
    if text is None:
        raise SourceUnavailable(f"no {REPORT} in {destination.location(folder)}")
    return BatchReport.model_validate_json(text)


def report_results(destination: Destination, folder: str) -> Iterator[DocumentResult]:
    """The results of a batch's report.json, one at a time: for a report that leaves them out
    (`BatchReport.results_omitted`), without holding them all. report.json puts each result on a
    line of its own (`tasks.export_files.write_report_lines`)."""
    lines = destination.stream_lines(folder, REPORT)
    if lines is None:
        raise SourceUnavailable(f"no {REPORT} in {destination.location(folder)}")
    for line in lines:
        line = line.strip().rstrip(",")
        if line.startswith('{"ref"'):
            yield DocumentResult.model_validate_json(line)


def list_batches(status: BatchStatus | None = None, limit: int = 20) -> list[BatchSummary]:
    """Earlier batch flow runs, newest first, with their docbatch status and report location."""
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["extract-batch", "retry-failed"])),
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[STATUS_TAG.format(status)])) if status else None,
            sort=FlowRunSort.START_TIME_DESC,
            limit=limit,
        )
    batches = []
    for run in runs:
        tagged = [t.split(":", 1)[1] for t in run.tags if t.startswith(STATUS_TAG.format(""))]
        totals = None
        if tagged:
            try:
                totals = load_report(str(run.id)).totals.model_dump()
            except Exception:  # noqa: BLE001 - a report moved or deleted since: list the run anyway
                totals = None
        batches.append(
            BatchSummary(
                name=run.name,
                flow_run_id=str(run.id),
                state=run.state.name if run.state else "unknown",
                status=tagged[-1] if tagged else None,  # type: ignore[arg-type]
                started=run.start_time.isoformat() if run.start_time else None,
                report=report_location_of_run(str(run.id)) if tagged else None,
                totals=totals,
            )
        )
    return batches
