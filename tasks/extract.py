"""Extracting documents: one task run per shard of documents, one document in memory per slot.

A shard is a list of references (no bytes). Its task run fetches each document from the
source, extracts it and drops the bytes before taking the next one. Shards of one document
give one task run per document (small batches); one shard per concurrency slot keeps
Prefect's per-task-run cost from dominating large batches (`tasks.sharding`).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from blocks.errors import DocumentError
from blocks.extractor import Extractor
from blocks.models import DocumentRef, DocumentResult, ErrorKind
from blocks.resolve import Source
from tasks.result_cache import cached_extract
from tasks.review import apply_review
from tasks.sharding import is_sharded

if TYPE_CHECKING:
    from tasks.share import ShareContext


class ExtractOptions(BaseModel):
    """Per-batch knobs every extraction task run needs."""

    batch_id: str
    max_concurrency: int = Field(ge=1)
    max_file_bytes: int = Field(ge=1)
    keep_text: bool = False
    log_each_document: bool = True
    shards: int = Field(default=1, ge=1, description="task runs the batch's documents were dealt to")
    max_tokens: int = Field(default=0, ge=0, description="token budget of the batch (in + out); 0: none")
    max_cost: float = Field(default=0.0, ge=0, description="cost budget of the batch; 0: none")
    cache: bool = Field(default=True, description="use the result cache for extractors that offer one")
    review_min_confidence: float = Field(
        default=0.4, ge=0, le=1, description="required values read with a lower confidence need review (tasks.review); 0: off"
    )


def batch_options(
    extraction: Any, *, batch_id: str, max_concurrency: int, documents: int, streamed: bool = False, budget_share: int = 1
) -> ExtractOptions:
    """The options of a share's task runs from the batch's `ExtractionSettings`, for `documents`
    (or a listing still running: `streamed`); `budget_share` is the number of shares splitting
    the token and cost budget, one per child flow run."""
    sharded = is_sharded(documents, streamed)
    shards = max_concurrency if sharded else documents
    return ExtractOptions(
        batch_id=batch_id,
        max_concurrency=max_concurrency,
        max_file_bytes=int(extraction.max_file_size_mb * 1024 * 1024),
        keep_text=extraction.keep_text,
        log_each_document=not sharded,  # INFO lines cost 0.6-1 s per 1,000 documents
        shards=max(1, shards),
        max_tokens=extraction.max_tokens_per_batch // budget_share,
        max_cost=extraction.max_cost_per_batch / budget_share,
        cache=extraction.cache,
        review_min_confidence=extraction.review_min_confidence,
    )


def extraction_task(extraction: Any) -> Any:
    """`extract_documents` with the batch's retries: transient errors only, backoff doubling."""
    return extract_documents.with_options(
        retries=extraction.retries,
        retry_delay_seconds=[extraction.retry_backoff_s * 2**n for n in range(extraction.retries)] or 0,
    )


class ShardSummary(BaseModel):
    """What an extraction task run returns: counts only.

    Each result leaves through its share's segment as soon as it is final (`tasks.journal`);
    returning them all again would make Prefect walk the list when the task run ends (about
    10 µs per result, at the batch's very end) and hold a second reference to every result.
    """

    extracted: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    taken_over: int = Field(default=0, description="documents taken from busier shards")


class TransientFailures(Exception):
    """Some documents of a shard hit transient errors; Prefect retries the task run for those only."""


def extract_one(
    ref: DocumentRef, source: Source, extractor: Extractor, options: ExtractOptions,
    on_stop: Callable[[str], None] | None = None,
) -> DocumentResult:
    """Fetch, extract and forget one document. Never raises: every outcome is a result.

    An error that says the whole batch cannot go on (`DocumentError.stops_batch`: the back-end
    rejected the API key) is reported through `on_stop`, so the rest are skipped, not sent.
    """
    started = time.perf_counter()
    if ref.refused:
        return DocumentResult(
            ref=ref, status="skipped", error=ref.refused, error_kind=ErrorKind.refused, error_transient=False,
            extractor=extractor.label,
        )
    sha256: str | None = None
    warnings: list[str] = []
    try:
        data, warnings = source.read(ref, options.max_file_bytes)
        sha256 = hashlib.sha256(data).hexdigest()
        extraction = cached_extract(extractor, ref.name, data, sha256, use_cache=options.cache)
        del data
    except BaseException as exc:  # noqa: BLE001 - one document must never fail the batch
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        error = exc if isinstance(exc, DocumentError) else extractor.classify(exc)
        if error.stops_batch and on_stop is not None:
            on_stop(f"the batch stopped after {ref.name}: {error.message}")
        return DocumentResult(
            ref=ref,
            status="skipped" if error.skip else "failed",
            sha256=sha256,
            error=error.message,
            error_kind=error.kind,
            error_transient=error.transient,
            warnings=warnings,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
            extractor=extractor.label,
            raw_output=error.raw_output,
            tokens_in=error.tokens_in,
            tokens_out=error.tokens_out,
            cost=extractor.cost(error.tokens_in, error.tokens_out),
        )
    result = DocumentResult(
        ref=ref,
        status="succeeded",
        fields=extraction.fields,
        text=extraction.text if options.keep_text else None,
        pages=extraction.pages,
        media_type=extraction.media_type,
        sha256=sha256,
        warnings=[*warnings, *extraction.warnings],
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
        extractor=extractor.label,
        fields_source=extraction.fields_source,
        reader=extraction.reader,
        tokens_in=extraction.tokens_in,
        tokens_out=extraction.tokens_out,
        cost=extractor.cost(extraction.tokens_in, extraction.tokens_out),
        route=extraction.route,
        provenance=extraction.provenance,
        schema_name=extraction.schema_name,
        ocr=extraction.ocr or None,
        ocr_engine=extraction.ocr_engine,
    )
    return apply_review(result, extractor, options.review_min_confidence)


def _shard_run_name() -> str:
    from prefect.runtime import task_run

    parameters = task_run.parameters
    refs = parameters.get("refs") or []
    if hasattr(refs, "unwrap"):  # the flow passes shards wrapped in prefect's `quote`
        refs = refs.unwrap()
    shard, options = parameters.get("shard"), parameters.get("options")
    if len(refs) == 1 and shard is None:
        return f"extract {refs[0].name}"
    if shard is not None and options is not None:
        if not refs:  # dealt from a listing still running: how many is not known yet
            return f"extract shard {shard + 1} of {options.shards}: documents dealt while listing"
        return f"extract shard {shard + 1} of {options.shards}: {len(refs)} document{'s' if len(refs) != 1 else ''}"
    if not refs:
        return "extract nothing"
    return f"extract {len(refs)} documents #{refs[0].index}-{refs[-1].index}"


def _retry_transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect asks this before a retry: only transient document failures deserve one."""
    try:
        state.result()
    except TransientFailures:
        return True
    except BaseException:
        return False
    return False


@task(
    name="extract-documents",
    task_run_name=_shard_run_name,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=1.0),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient_only,
    cache_policy=NO_CACHE,
    persist_result=False,
)
def extract_documents(
    refs: list[DocumentRef], source: Source, extractor: Extractor, options: ExtractOptions, share: ShareContext,
    shard: int | None = None,
) -> ShardSummary:
    """Extract a shard of documents, one at a time, each inside one of the share's concurrency slots.

    `shard` is this task run's number in a sharded batch: its documents then come from the
    share's queues, and once its own are done it takes the last ones of the busiest other
    shard (`tasks.work`). Each final result is appended to the share's segment, the one road by
    which results leave (`tasks.journal`); the task run returns counts.

    What a task run did survives its own retries in `share.kept` and `share.counts` (a
    transient failure's result; the count of final results by status), so a retry after a transient error (HTTP 429, a timeout)
    re-extracts only the documents that hit one. Only a first
    attempt takes documents from other shards, so a taken document gets as many attempts as
    its own shard would have given it.
    """
    logger = get_run_logger()
    if hasattr(share, "unwrap"):  # called with the `quote` wrapper itself (not through a task runner)
        share = share.unwrap()
    context = TaskRunContext.get()
    run_key = str(context.task_run.id) if context else "local"
    attempt = context.task_run.run_count if context else 1
    retries = context.task.retries if context else 0
    final_attempt = attempt > retries
    kept = share.kept.setdefault(run_key, {})
    counts = share.counts.setdefault(run_key, Counter())
    budget = share.budget
    work = share.work if shard is not None and share.work is not None and shard < len(share.work) else None

    def documents() -> Iterator[tuple[DocumentRef, DocumentResult | None]]:
        for previous in [r for r in kept.values() if isinstance(r, DocumentResult)]:  # transient failures: retried
            yield previous.ref, previous
        if work is None:
            yield from ((ref, None) for ref in refs if ref.index not in kept)
        else:
            while (ref := work.take(shard, steal=attempt == 1)) is not None:
                yield ref, None

    with share.slots.shard() as slots:
        for ref, previous in documents():
            with slots.document(ref.index):
                if budget.stopped is not None:  # checked inside the slot: a stop may come while waiting for it
                    result = DocumentResult(
                        ref=ref, status="skipped", error=f"not extracted: {budget.stopped}", error_kind=ErrorKind.backend,
                        error_transient=False, extractor=extractor.label,
                    )
                else:
                    result = extract_one(ref, source, extractor, options, on_stop=budget.stop)
                    budget.spend(result)
            result.attempts = (previous.attempts if previous else 0) + 1
            transient = result.status == "failed" and bool(result.error_transient)
            if transient and not final_attempt:
                kept[ref.index] = result  # for the retry
                logger.warning("%s: %s (%s, will retry)", ref.name, result.error, result.error_kind.value if result.error_kind else "")
                continue
            # A final result leaves through the segment; only its status stays here, as a count
            # (a second copy of every result until the shard ended measured 49 MB at 10,000
            # documents; an entry per document, 10 MB at 100,000). A shard without a queue of its
            # own is given its documents, and needs to know which are done when it is retried.
            kept.pop(ref.index, None)
            counts[result.status] += 1
            if work is None:
                kept[ref.index] = result.status
            share.segment.record(result)
            if result.status == "failed":
                logger.warning("%s: failed, %s: %s", ref.name, result.error_kind.value if result.error_kind else "error", result.error)
            elif options.log_each_document:
                logger.info("%s: %s in %.0f ms", ref.name, result.status, result.duration_ms)

    waiting = [r.ref.name for r in kept.values() if isinstance(r, DocumentResult)]
    if waiting and not final_attempt:
        raise TransientFailures(
            f"{len(waiting)} document(s) hit transient errors and will be retried: {', '.join(waiting[:5])}"
        )
    share.kept.pop(run_key, None)
    share.counts.pop(run_key, None)
    if work is not None:
        taken_over = work.stolen_by[shard]  # only a first attempt steals, so all of them are counted
    else:
        own = {ref.index for ref in refs}
        taken_over = sum(index not in own for index in kept)
    summary = ShardSummary(
        extracted=sum(counts.values()),
        succeeded=counts["succeeded"],
        failed=counts["failed"],
        skipped=counts["skipped"],
        taken_over=taken_over,
    )
    if not options.log_each_document:
        logger.info(
            "%d document(s) extracted, %d failed%s", summary.extracted - summary.failed, summary.failed,
            f"; {summary.taken_over} of them taken over from busier shards" if summary.taken_over else "",
        )
    return summary
