"""The collector: results in, one BatchReport out, with exports, artifacts and an event."""

from __future__ import annotations

import contextlib
import re
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from datetime import datetime, timezone

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.logging import get_run_logger

from blocks.resolve import Destination
from blocks.models import BatchParameters, BatchReport, BatchStatus, BatchTotals, DocumentResult, ReviewNote
from tasks.artifacts import DocumentsTable, publish_link, publish_summary, retract_link
from tasks.export_files import REPORT_NAME
from tasks.exports import ExportStream


def rollup(results: list[DocumentResult]) -> tuple[BatchStatus, BatchTotals, str]:
    """Batch status from per-document outcomes; skipped documents neither pass nor fail a batch."""
    totals = BatchTotals(
        total=len(results),
        succeeded=sum(r.status == "succeeded" for r in results),
        failed=sum(r.status == "failed" for r in results),
        skipped=sum(r.status == "skipped" for r in results),
        tokens_in=sum(r.tokens_in or 0 for r in results),
        tokens_out=sum(r.tokens_out or 0 for r in results),
        cost=round(sum(r.cost for r in results if r.cost is not None), 6) if any(r.cost is not None for r in results) else None,
        needs_review=sum(r.status == "succeeded" and r.review == "needs_review" for r in results),
    )
    review = f"; {totals.needs_review} {'needs' if totals.needs_review == 1 else 'need'} review" if totals.needs_review else ""
    if totals.total == 0:
        return "completed", totals, "no documents matched in the source: nothing to extract"
    if totals.failed == 0:
        message = f"all {totals.succeeded} document(s) extracted"
        if totals.skipped:
            message += f", {totals.skipped} skipped"
        return "completed", totals, message + review
    if totals.succeeded == 0:
        return "failed", totals, f"all {totals.failed} attempted document(s) failed"
    return "partially_failed", totals, f"{totals.failed} of {totals.succeeded + totals.failed} attempted document(s) failed" + review


def review_notes(results: list[DocumentResult]) -> list[ReviewNote]:
    """The succeeded documents that need review, in input order, with their reasons."""
    return [
        ReviewNote(index=r.ref.index, file=r.ref.name, reasons=list(r.review_reasons))
        for r in results
        if r.status == "succeeded" and r.review == "needs_review"
    ]


def batch_folder_name(name: str, started: datetime, flow_run_id: str | None) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60] or "batch"
    suffix = (flow_run_id or "local").split("-")[0]
    return f"{started:%Y%m%d-%H%M%S}-{slug}-{suffix}"


STATUS_TAG = "docbatch-status:{}"
# Files needing review named in the completed event's payload (all are in report.json).
EVENT_REVIEW_FILES = 20


def tag_status(flow_run_id: str, status: BatchStatus) -> None:
    """Tag the flow run with its docbatch status, so the UI's run list can filter on it.

    The run's tags come from its own context when this runs inside it (one API call instead of
    two, at a moment the server is busiest), else from the API.
    """
    from prefect import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    with get_client(sync_client=True) as client:
        if run is None or str(run.id) != str(flow_run_id):
            run = client.read_flow_run(flow_run_id)
        tags = [t for t in run.tags if not t.startswith(STATUS_TAG.format(""))]
        client.update_flow_run(flow_run_id, tags=[*tags, STATUS_TAG.format(status)])


@task(name="collect-results", cache_policy=NO_CACHE, persist_result=False)
def collect_results(
    results: list[DocumentResult],
    *,
    name: str,
    source: str,
    extractor: str,
    started: datetime,
    flow_run_id: str | None,
    destination: Destination,
    folder: str,
    exports: ExportStream,
    resumed: int = 0,
    parameters: BatchParameters | None = None,
    batch_key: str | None = None,
    table: DocumentsTable | None = None,
) -> BatchReport:
    """Roll the results up, finish the exports, publish the artifacts and announce the batch's end.

    `exports` has been fed every result in input order while the batch ran (documents.jsonl,
    .json and .xlsx are mostly written by now); finishing it writes the rest and report.json.
    `table`, when given, may have sent the documents table already (a large batch's).
    """
    logger = get_run_logger()
    results = sorted(results, key=lambda r: r.ref.index)
    status, totals, message = rollup(results)
    if resumed:
        totals.resumed = resumed
        message += f" ({resumed} taken from the interrupted run's checkpoint)"
    finished = datetime.now(timezone.utc)
    attempted = totals.succeeded + totals.failed
    written = exports.locations(results)
    report = BatchReport(
        name=name,
        flow_run_id=flow_run_id,
        source=source,
        status=status,
        message=message,
        totals=totals,
        progress=100.0 if totals.total == 0 else round(100.0 * totals.done / totals.total, 1),
        success_rate=round(100.0 * totals.succeeded / attempted, 1) if attempted else None,
        started=started,
        finished=finished,
        duration_s=round((finished - started).total_seconds(), 3),
        extractor=extractor,
        parameters=parameters,
        batch_key=batch_key,
        needs_review=review_notes(results),
        results=results,
        exports=written,
        output_dir=destination.location(folder),
    )
    # API calls wait on the server and the exports on the disk (or the export writer's
    # process): overlap them. The summary and the link name the export files before they are
    # published (their names and places are fixed up front, and publishing follows within a
    # fraction of a second); should publishing fail, a corrected summary replaces the summary
    # and the link is deleted before the error is raised.
    link = destination.link(folder, REPORT_NAME)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="docbatch-artifacts") as pool:
        table = table or DocumentsTable(name, len(results))
        calls = [pool.submit(copy_context().run, table.publish, results), pool.submit(copy_context().run, publish_summary, report)]
        linked = pool.submit(copy_context().run, publish_link, report, link)
        if flow_run_id:
            calls.append(pool.submit(copy_context().run, tag_status, flow_run_id, status))
        try:
            exports.finish(report)
        except BaseException as exc:
            wait([*calls, linked])
            with contextlib.suppress(Exception):
                publish_summary(report.model_copy(update={"exports": {}, "message": f"{message}; the exports could not be written: {exc}"}))
            with contextlib.suppress(Exception):
                retract_link(linked.result())
            raise
        for call in [*calls, linked]:
            call.result()
    emit_event(
        event="docbatch.batch.completed",
        # The status is also a resource label: automation triggers match labels, not payloads.
        resource={"prefect.resource.id": f"docbatch.batch.{flow_run_id or folder}", "prefect.resource.name": name, "docbatch.status": status},
        payload={
            "status": status,
            "totals": totals.model_dump(),
            "report": written.get("report.json"),
            "batch_name": name,
            "needs_review": totals.needs_review,
            "needs_review_files": [note.file for note in report.needs_review[:EVENT_REVIEW_FILES]],
        },
    )
    for result in report.failed_results():
        emit_event(
            event="docbatch.document.failed",
            resource={"prefect.resource.id": f"docbatch.document.{result.ref.uri}", "prefect.resource.name": result.ref.name},
            related=[{"prefect.resource.id": f"docbatch.batch.{flow_run_id or folder}", "prefect.resource.role": "batch", "prefect.resource.name": name}],
            payload={"file": result.ref.name, "uri": result.ref.uri, "error_kind": result.error_kind.value if result.error_kind else None,
                     "error": result.error, "batch_name": name, "flow_run_id": flow_run_id},
        )
    logger.info("%s: %s (%s); exports in %s", name, status, message, report.output_dir)
    return report
