"""The collector: results in, one BatchReport out, with exports, artifacts and an event."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from contextvars import copy_context
from datetime import datetime, timezone
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event
from prefect.logging import get_run_logger

from blocks.resolve import Destination
from blocks.models import BatchParameters, BatchReport, BatchStatus, BatchTotals, DocumentResult, ReviewNote
from tasks.export_files import has_line_items
from tasks.artifacts import DocumentsTable, publish_link, publish_summary, retract_link
from tasks.export_files import REPORT_NAME
from tasks.exports import ExportStream


# A batch of more than this many documents returns its report without `results` (they are all in
# report.json and the exports): the flow then never holds every result in memory, so its peak
# stays flat as batches grow (benchmarks/README.md, overhead.py at 10,000 and 100,000).
RESULTS_KEPT = 10_000
PROBLEMS_KEPT = 50  # failed and skipped documents the summary artifact lists
REVIEW_KEPT = 1_000  # results needing review kept for the review page of a batch whose report leaves results out


class BatchTally:
    """What the collector needs of a batch's results, gathered as they are merged: counts, the
    review notes, the failures (for their events), and the results themselves only up to `keep`."""

    def __init__(self, keep: int | None = None) -> None:
        self.keep = RESULTS_KEPT if keep is None else keep
        self.total = self.succeeded = self.failed = self.skipped = self.needs_review = 0
        self.tokens_in = self.tokens_out = 0
        self.cost: float | None = None
        self.line_items = False
        self.review: list[ReviewNote] = []
        self.failures: list[dict[str, Any]] = []  # file, uri, error kind and message of each failed document
        self.problems: list[DocumentResult] = []  # the first failed or skipped ones, for the summary
        self.kept: list[DocumentResult] | None = []
        self.review_results: list[DocumentResult] = []  # the first REVIEW_KEPT needing review

    @classmethod
    def of(cls, results: Iterable[DocumentResult]) -> BatchTally:
        tally = cls(keep=sys.maxsize)
        tally.add(results)
        return tally

    def add(self, results: Iterable[DocumentResult]) -> None:
        for r in results:
            self.total += 1
            self.tokens_in += r.tokens_in or 0
            self.tokens_out += r.tokens_out or 0
            if r.cost is not None:
                self.cost = (self.cost or 0.0) + r.cost
            if r.status == "succeeded":
                self.succeeded += 1
                if r.review == "needs_review":
                    self.needs_review += 1
                    self.review.append(ReviewNote(index=r.ref.index, file=r.ref.name, reasons=list(r.review_reasons)))
                    if len(self.review_results) < REVIEW_KEPT:
                        self.review_results.append(r)
                self.line_items = self.line_items or has_line_items([r])
            else:
                if r.status == "failed":
                    self.failed += 1
                    self.failures.append({"file": r.ref.name, "uri": r.ref.uri, "error_kind": r.error_kind.value if r.error_kind else None, "error": r.error})
                else:
                    self.skipped += 1
                if len(self.problems) < PROBLEMS_KEPT:
                    self.problems.append(r)
            if self.kept is not None:
                self.kept.append(r)
                if len(self.kept) > self.keep:
                    self.kept = None  # from here on the report leaves the results out

    def rollup(self) -> tuple[BatchStatus, BatchTotals, str]:
        """Batch status from per-document outcomes; skipped documents neither pass nor fail a batch."""
        totals = BatchTotals(
            total=self.total, succeeded=self.succeeded, failed=self.failed, skipped=self.skipped,
            tokens_in=self.tokens_in, tokens_out=self.tokens_out,
            cost=round(self.cost, 6) if self.cost is not None else None, needs_review=self.needs_review,
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


def rollup(results: Iterable[DocumentResult]) -> tuple[BatchStatus, BatchTotals, str]:
    """Batch status, totals and message of these results."""
    return BatchTally.of(results).rollup()


def review_notes(results: Iterable[DocumentResult]) -> list[ReviewNote]:
    """The succeeded documents that need review, in input order, with their reasons."""
    return BatchTally.of(results).review


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
    tally: BatchTally,
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
    extraction_key: str | None = None,
    table: DocumentsTable,
) -> BatchReport:
    """Roll the results up, finish the exports, publish the artifacts and announce the batch's end.

    `tally` has gathered what is needed of every result while they were merged, and `exports`
    has been fed every result in input order (documents.jsonl, .json and .xlsx are mostly
    written by now); finishing it writes the rest and report.json. `table` may have sent the
    documents table already (a large batch's). The report holds the results themselves only
    for a batch of up to `RESULTS_KEPT` documents.
    """
    logger = get_run_logger()
    status, totals, message = tally.rollup()
    if resumed:
        totals.resumed = resumed
        message += f" ({resumed} taken from the interrupted run's checkpoint)"
    finished = datetime.now(timezone.utc)
    attempted = totals.succeeded + totals.failed
    written = exports.locations(tally.line_items)
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
        extraction_key=extraction_key,
        needs_review=tally.review,
        results=tally.kept or [],
        results_omitted=0 if tally.kept is not None else tally.total,
        exports=written,
        output_dir=destination.location(folder),
    )
    # The database's rows first: the report, its summary and report.json say how that went.
    report.database = exports.finish_database(report)
    if report.database is not None and report.database.error:
        logger.warning("The database refused the batch's rows: %s. The file exports are written; "
                       "`docbatch export-db` loads them once it is back.", report.database.error)
    # API calls wait on the server and the exports on the disk (or the export writer's
    # process): overlap them. The summary and the link name the export files before they are
    # published (their names and places are fixed up front, and publishing follows within a
    # fraction of a second); should publishing fail, a corrected summary replaces the summary
    # and the link is deleted before the error is raised.
    link = destination.link(folder, REPORT_NAME)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="docbatch-artifacts") as pool:
        calls = [pool.submit(copy_context().run, table.publish, tally.total), pool.submit(copy_context().run, publish_summary, report, tally.problems)]
        linked = pool.submit(copy_context().run, publish_link, report, link)
        if flow_run_id:
            calls.append(pool.submit(copy_context().run, tag_status, flow_run_id, status))
        try:
            exports.finish(report, line_items=tally.line_items, count=tally.total)
        except BaseException as exc:
            wait([*calls, linked])
            with contextlib.suppress(Exception):
                publish_summary(report.model_copy(update={"exports": {}, "message": f"{message}; the exports could not be written: {exc}"}), tally.problems)
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
    for failure in tally.failures:
        emit_event(
            event="docbatch.document.failed",
            resource={"prefect.resource.id": f"docbatch.document.{failure['uri']}", "prefect.resource.name": failure["file"]},
            related=[{"prefect.resource.id": f"docbatch.batch.{flow_run_id or folder}", "prefect.resource.role": "batch", "prefect.resource.name": name}],
            payload={**failure, "batch_name": name, "flow_run_id": flow_run_id},
        )
    logger.info("%s: %s (%s); exports in %s", name, status, message, report.output_dir)
    return report
