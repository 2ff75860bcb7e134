"""Prefect artifacts of a batch: a per-document table and a markdown summary.

Keys are fixed (`docbatch-documents`, `docbatch-summary`, `docbatch-progress`) so the Prefect UI
shows each as a history across runs of a deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from typing import Any
from uuid import UUID

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from blocks.invoice_schema import headline
from blocks.models import BatchReport, DocumentResult

TABLE_KEY = "docbatch-documents"
SUMMARY_KEY = "docbatch-summary"
PROGRESS_KEY = "docbatch-progress"
LINK_KEY = "docbatch-exports"
TABLE_ROW_LIMIT = 5000
SUMMARY_FAILURE_LIMIT = 50
SUMMARY_REVIEW_LIMIT = 50


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def table_rows(results: Sequence[DocumentResult]) -> list[dict[str, Any]]:
    rows = []
    routed = any(r.route for r in results[:TABLE_ROW_LIMIT])
    for result in results[:TABLE_ROW_LIMIT]:
        row: dict[str, Any] = {"#": result.ref.index, "file": result.ref.name, "status": result.status}
        if routed:
            row["route"] = result.route
        for key, value in headline(result.fields).items():
            row[key] = _cell(value)
        row["fields from"] = result.fields_source
        row["pages"] = result.pages
        row["review"] = _review_cell(result)
        row["error"] = f"{result.error_kind.value}: {result.error}" if result.error_kind else None
        rows.append(row)
    return rows


def _review_cell(result: DocumentResult) -> str | None:
    """'ok', or 'needs review: ' and the reasons; empty for failed and skipped documents."""
    if result.review != "needs_review":
        return result.review
    return "needs review: " + " ".join(result.review_reasons)


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_markdown(report: BatchReport, problems: Sequence[DocumentResult] | None = None) -> str:
    """The summary's markdown; `problems`: the first failed and skipped documents, when the
    report leaves its results out (a large batch: `BatchReport.results_omitted`)."""
    totals = report.totals
    rate = f"{report.success_rate:.1f} %" if report.success_rate is not None else "n/a"
    lines = [
        f"# {report.name}",
        "",
        f"**Status:** `{report.status}` — {report.message}",
        "",
        "| documents | succeeded | failed | skipped | success rate | duration | need review |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {totals.total} | {totals.succeeded} | {totals.failed} | {totals.skipped} | {rate} | {report.duration_s:.1f} s | {totals.needs_review} |",
        "",
        f"Source: `{report.source}` · extractor: `{report.extractor}`",
    ]
    if totals.tokens_in or totals.tokens_out:
        cost = f", cost {totals.cost:.4f}" if totals.cost is not None else ""
        lines += ["", f"Model tokens: {totals.tokens_in:,} in, {totals.tokens_out:,} out{cost}"]
    review = report.needs_review
    if review:
        lines += [
            "", "## Documents that need review", "",
            "Succeeded, but a validation check failed or a required value is missing or uncertain.", "",
            "| # | file | reasons |", "| ---: | --- | --- |",
        ]
        for note in review[:SUMMARY_REVIEW_LIMIT]:
            reasons = " ".join(_md(reason) for reason in note.reasons)
            lines.append(f"| {note.index} | `{note.file}` | {reasons} |")
        if len(review) > SUMMARY_REVIEW_LIMIT:
            lines.append(f"\n…and {len(review) - SUMMARY_REVIEW_LIMIT} more: see the review columns of the exports or report.json.")
    if problems is None:
        problems = [r for r in report.results if r.status != "succeeded"]
    unsucceeded = report.totals.failed + report.totals.skipped
    if problems:
        lines += ["", "## Failed and skipped documents", "", "| # | file | kind | error |", "| ---: | --- | --- | --- |"]
        for result in problems[:SUMMARY_FAILURE_LIMIT]:
            error = (result.error or "").replace("|", "\\|").replace("\n", " ")
            kind = result.error_kind.value if result.error_kind else ""
            lines.append(f"| {result.ref.index} | `{result.ref.name}` | {kind} | {error} |")
        if unsucceeded > SUMMARY_FAILURE_LIMIT:
            lines.append(f"\n…and {unsucceeded - SUMMARY_FAILURE_LIMIT} more: see the errors sheet of documents.xlsx or report.json.")
    if report.exports:
        lines += ["", "## Exports", ""]
        if report.output_dir:
            lines.append(f"Folder: `{report.output_dir}`")
            lines.append("")
        lines += [f"- `{name}`: `{where}`" for name, where in report.exports.items()]
    database = report.database
    if database is not None:
        lines += ["", "## Database", ""]
        if database.error:
            lines.append(f"**Refused** by `{database.url}`: {_md(database.error)}. The file exports are written; "
                         "`docbatch export-db` loads the batch once the database is back.")
        else:
            lines.append(f"{database.documents} document row(s) and {database.line_items} line item row(s) upserted into `{database.url}`.")
    return "\n".join(lines) + "\n"


def publish_table(results: Sequence[DocumentResult], name: str, total: int) -> None:
    shown = min(total, TABLE_ROW_LIMIT)
    more = f" (first {shown}; all rows are in the exports)" if shown < total else ""
    create_table_artifact(
        table=table_rows(results),
        key=TABLE_KEY,
        description=f"{name}: one row per document{more}",
    )


class DocumentsTable:
    """The `docbatch-documents` artifact, sent as soon as its rows are final.

    In a batch of more than `TABLE_ROW_LIMIT` documents the table shows the first ones only,
    and they are final once the in-order stream has passed them: it is then sent from a
    background thread while the batch goes on, instead of at its end (at 10,000 documents
    its 5,000 rows took 0.45 s to publish beside the exports' finish). Otherwise the collector
    sends it with the whole batch's results. `total` is the batch's document count (0 while a
    listing that feeds the batch still runs), which decides whether the table is truncated.
    """

    def __init__(self, name: str, total: int) -> None:
        self.name = name
        self.total = total
        self.first: list[DocumentResult] = []  # the rows the table shows
        self._pool: ThreadPoolExecutor | None = None
        self._sent: Future[None] | None = None

    def offer(self, ready: Sequence[DocumentResult]) -> None:
        """Called with each next run of results in input order; sends the table once it is complete."""
        if len(self.first) < TABLE_ROW_LIMIT:
            self.first.extend(ready[: TABLE_ROW_LIMIT - len(self.first)])
        if self._sent is None and self.total > TABLE_ROW_LIMIT and len(self.first) >= TABLE_ROW_LIMIT:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docbatch-table")
            self._sent = self._pool.submit(copy_context().run, publish_table, list(self.first), self.name, self.total)

    def publish(self, total: int) -> None:
        """Send the table now (`total`: the batch's document count), or wait for the early send
        (raising its error, if any)."""
        if self._sent is None:
            publish_table(self.first, self.name, total)
            return
        try:
            self._sent.result()
        finally:
            assert self._pool is not None
            self._pool.shutdown(wait=False)


def publish_summary(report: BatchReport, problems: Sequence[DocumentResult] | None = None) -> None:
    """Counts, failures and the export files (named where `finish` will publish them)."""
    create_markdown_artifact(markdown=summary_markdown(report, problems), key=SUMMARY_KEY, description=f"{report.name}: summary")


def publish_link(report: BatchReport, url: str | None) -> UUID | None:
    """A link to the batch's report.json where it is published (a file:// URL or the S3 object)."""
    if not url:
        return None
    return create_link_artifact(
        link=url, link_text=report.exports.get("report.json", url), key=LINK_KEY,
        description=f"{report.name}: exports in {report.output_dir}",
    )


def retract_link(artifact_id: UUID | None) -> None:
    """Delete a link published for exports that then could not be written."""
    if artifact_id is None:
        return
    from prefect import get_client

    with get_client(sync_client=True) as client:
        client.delete_artifact(artifact_id)
