"""A share: the documents one process extracts for a batch, as sharded task runs under one bound.

With `workers = 0` the batch is one share, run by the batch's own flow; with `workers = K` each
of K child flow runs (`flows.shard`) runs one. Either way `run_share` deals the share's
documents to task runs (`tasks.sharding`), extracts them under `max_concurrency` slots, and
records every document's final result in the share's segment (`tasks.journal.SegmentWriter`),
including a row for each document a crashed task run left unfinished: the segment is the only
way a result leaves, and the flow that merges the segments needs nothing else from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect import unmapped
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import BaseModel

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import DocumentRef, DocumentResult, ErrorKind
from blocks.resolve import Source
from tasks.budget import Budget
from tasks.extract import ExtractOptions
from tasks.journal import SegmentWriter
from tasks.listing import ListingFeed
from tasks.sharding import is_sharded, plan_shards
from tasks.slots import DocumentSlots
from tasks.work import SharedWork


@dataclass
class ShareContext:
    """What the extraction task runs of one share have in common, in the process running them.

    Handed to each task run as a parameter (wrapped in `quote`, so Prefect neither walks nor
    serialises it): the thread task runner keeps it a live object, never a registry lookup.
    """

    segment: SegmentWriter
    slots: DocumentSlots
    budget: Budget
    work: SharedWork | None = None
    # Results kept across a task run's retries, by task run id: a retry re-extracts only the
    # documents that hit a transient error.
    # (A final result's status; the result itself only while a retry is to come.)
    kept: dict[str, dict[int, DocumentResult | str]] = field(default_factory=dict)
    counts: dict[str, Counter[str]] = field(default_factory=dict)  # final results by status, by task run


class ShareSummary(BaseModel):
    """What a share reports when it ends: counts only (the results are in its segment)."""

    documents: int = 0
    recorded: int = 0
    task_runs: int = 0
    crashed_task_runs: int = 0
    peak_in_flight: int = 0


def crashed_row(ref: DocumentRef, exc: BaseException | None, extractor: str) -> DocumentResult:
    """The row of a document whose task run (or whole share) ended before giving it a result."""
    if isinstance(exc, DocumentError):
        error = exc
    elif exc is None:  # only if a task run ended without finishing a document it took: a bug
        error = DocumentError(ErrorKind.internal, "extraction ended without a result for this document")
    else:
        error = DocumentError(ErrorKind.internal, f"extraction task crashed: {type(exc).__name__}: {exc}")
    return DocumentResult(ref=ref, status="failed", error=error.message, error_kind=error.kind, error_transient=error.transient, extractor=extractor)


def crashed_task_runs(futures: Sequence[PrefectFuture[Any]]) -> dict[int, BaseException]:
    """The exception of each task run (by position) that ended without completing."""
    crashed: dict[int, BaseException] = {}
    for n, future in enumerate(futures):
        future.wait()
        if future.state.is_completed():
            continue
        try:
            future.result()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            crashed[n] = exc
        else:
            crashed[n] = RuntimeError(f"task run ended {future.state.type.value}")
    return crashed


def run_share(
    *,
    refs: list[DocumentRef],
    source: Source,
    extractor: Extractor,
    options: ExtractOptions,
    segment: SegmentWriter,
    task: Any,
    feed: ListingFeed | None = None,
) -> ShareSummary:
    """Extract `refs` (or, with a `feed`, every reference its listing deals) and record each result.

    `task` is `tasks.extract.extract_documents` with the batch's retry options; `options` its
    `ExtractOptions`. Returns once every document has a final line in `segment`.
    """
    max_concurrency = options.max_concurrency
    sharded = is_sharded(len(refs), streamed=feed is not None)
    if feed is not None:
        shards: list[list[DocumentRef]] = [[] for _ in range(max_concurrency)]
    else:
        shards = [[refs[position] for position in shard] for shard in plan_shards(len(refs), max_concurrency)]
    work = SharedWork(shards, feed) if sharded else None
    context = ShareContext(segment=segment, slots=DocumentSlots(max_concurrency), budget=Budget(options.max_tokens, options.max_cost), work=work)
    summary = ShareSummary(task_runs=len(shards))
    if shards:
        # A runner per share, bounded by the batch's own max_concurrency, so the UI's value takes
        # effect whatever task runner the flow was deployed with; the slots bound documents in
        # flight in any case.
        with ThreadPoolTaskRunner(max_workers=min(max_concurrency, len(shards))) as runner:
            mapped: dict[str, Any] = {
                "refs": [quote(shard) for shard in shards],
                "source": unmapped(source),
                "extractor": unmapped(extractor),
                "options": unmapped(options),
                "share": unmapped(quote(context)),
            }
            if sharded:
                mapped["shard"] = list(range(len(shards)))
            futures = runner.map(task, mapped)
            crashed = crashed_task_runs(futures)
        todo = feed.refs if feed is not None else refs  # a feed's list is complete once the shards ran dry
        missing = [ref for ref in todo if ref.index not in segment.recorded]
        if missing:
            owners = work.holders(ref.index for ref in missing) if work else {shard[0].index: n for n, shard in enumerate(shards)}
            for n, exc in crashed.items():
                lost = sum(owners.get(ref.index) == n for ref in missing)
                get_run_logger().warning("Extraction task run %d of %d crashed, %d document(s) unfinished: %s", n + 1, len(shards), lost, exc)
            for ref in missing:
                segment.record(crashed_row(ref, crashed.get(owners.get(ref.index, -1)), extractor.label))
        summary.crashed_task_runs = len(crashed)
        summary.documents = len(todo)
    summary.recorded = len(segment.recorded)
    summary.peak_in_flight = context.slots.peak_in_flight
    return summary
