"""The batch flow: one flow run turns one folder into structured records and exports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timezone
from queue import Empty, SimpleQueue
from typing import Annotated, Any

from prefect import flow, unmapped
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import Field

from blocks.errors import BatchRefused, DocumentError, SourceUnavailable
from blocks.models import BatchParameters, BatchReport, DocumentRef, DocumentResult, ErrorKind
from blocks.extractor import Extractor
from blocks.models import ExportFormat
from blocks.resolve import Destination, Source, resolve_destination, resolve_extractor, resolve_source
from flows.params import ExportSettings, ExtractionSettings
from tasks.artifacts import DocumentsTable
from tasks.collect import batch_folder_name, collect_results
from tasks.exports import PROCESS_FROM, ExportStream
from tasks.journal import BatchJournal, JournalHeader, batch_key, find_resumable
from tasks.extract import ExtractOptions, extract_documents
from tasks.listing import DocumentListing, ListingFeed, list_documents, refuse_if_too_many
from tasks.review_page import review_options, write_review_page
from tasks.runtime import batch_runtime
from tasks.sharding import PER_DOCUMENT_LIMIT, plan_shards
from tasks.work import SharedWork

# A batch without a document limit starts extracting once its listing has found more than this
# many documents (or ended): enough to decide the task runs' shape (`tasks.sharding`) and where
# the exports are written (`tasks.exports.PROCESS_FROM`), far fewer than a large folder holds.
STREAM_AFTER = max(PER_DOCUMENT_LIMIT, PROCESS_FROM)


def default_batch_name(now: datetime | None = None) -> str:
    return f"Batch {(now or datetime.now()).astimezone():%Y-%m-%d %H:%M}"


def batch_run_name() -> str:
    """Flow run name: the batch name, or `Batch YYYY-MM-DD HH:mm`."""
    name = (flow_run.parameters.get("batch_name") or "").strip()
    return name or default_batch_name()


def _shard_crashed(ref: DocumentRef, exc: BaseException | None, extractor: str) -> DocumentResult:
    """The row of a document whose task run crashed before giving it a result."""
    if isinstance(exc, DocumentError):
        error = exc
    elif exc is None:  # only if a task run ended without finishing a document it took: a bug
        error = DocumentError(ErrorKind.internal, "extraction ended without a result for this document")
    else:
        error = DocumentError(ErrorKind.internal, f"extraction task crashed: {type(exc).__name__}: {exc}")
    return DocumentResult(ref=ref, status="failed", error=error.message, error_kind=error.kind, error_transient=error.transient, extractor=extractor)


def stream_results(delivered: SimpleQueue[tuple[DocumentResult, str] | None], futures: Sequence[PrefectFuture[Any]], ordered: InOrder) -> None:
    """Offer each final result to `ordered` as it arrives, until every task run has ended.

    Task runs put their results on `delivered` as each document finishes (see
    `BatchRuntime.document_finished`), so the export stream works through the batch while it
    runs; each finished task run adds a None after its last result. (Letting results gather
    for 20 ms before taking them, to wake this thread less often, measured no difference.)
    """
    running = len(futures)
    for future in futures:
        future.add_done_callback(lambda _: delivered.put(None))
    while running:
        arrived: list[tuple[DocumentResult, str]] = []
        item = delivered.get()
        while True:
            if item is None:
                running -= 1
            else:
                arrived.append(item)
            try:
                item = delivered.get_nowait()
            except Empty:
                break
        ordered.offer(arrived)


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


@flow(name="extract-batch", flow_run_name=batch_run_name, validate_parameters=True)
def extract_batch(
    source: str = "examples/documents",
    include: list[str] = [],  # noqa: B006 - never mutated; a list default renders as a list field in the UI (None added a confusing type switch)
    exclude: list[str] = [],  # noqa: B006
    recursive: bool = True,
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4,
    batch_name: str = "",
    extraction: ExtractionSettings = ExtractionSettings(),
    export: ExportSettings = ExportSettings(),
    max_documents: Annotated[int, Field(ge=0)] = 1000,
    resume: bool = False,
    documents: list[str] = [],  # noqa: B006
) -> BatchReport:
    """Extract every document of a folder into structured records, exports and artifacts.

    One document's failure never fails the batch: it gets a failed row with its error. The
    batch ends `completed`, `partially_failed` (some documents failed) or `failed` (all did).

    Args:
        source: What to read: a folder (absolute, or relative to the worker's working directory), an S3 prefix 's3://bucket/prefix', or a saved source block as 'BLOCK-TYPE/NAME' (e.g. 's3-source/inbox').
        include: Glob patterns a file must match, e.g. '*.pdf'; a pattern with '/' matches the relative path. Empty: all files.
        exclude: Glob patterns that drop a file, e.g. 'drafts/*'.
        recursive: Also read sub-folders.
        max_concurrency: Documents extracted at the same time (1-64).
        batch_name: Name of this batch and of its flow run; empty gives 'Batch YYYY-MM-DD HH:mm'.
        extraction: Which extractor to use and its limits.
        export: Output folder and export formats.
        max_documents: Refuse, before any work, a batch with more documents than this; 0 means unlimited (extraction then starts while a large folder is still being listed).
        documents: Only these documents, by their name relative to the source (as in a report's results); empty extracts every listed document. Ingestion and retry-failed set it.
        resume: Continue the newest unfinished run of this same batch (same source, filters and extractor settings) in the output folder: documents its checkpoint already holds are not extracted again.
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    run_id = flow_run.get_id()
    name = (batch_name or "").strip() or (flow_run.get_name() if run_id else None) or default_batch_name()

    # Loading a saved extractor block is an API round trip: let it overlap the listing. A batch
    # without a document limit, filter or checkpoint to honour does not wait for its listing to
    # end either: past `STREAM_AFTER` references it starts extracting while the listing goes on.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="docbatch-setup")
    feed = ListingFeed() if max_documents == 0 and not documents and not resume else None
    try:
        try:
            src = resolve_source(source, include=include or [], exclude=exclude or [], recursive=recursive)
            src.check()
            loading = pool.submit(copy_context().run, resolve_extractor, extraction.extractor, **extraction.extractor_options())
            destination = resolve_destination(export.output_dir)
            destination.check()
            listing = pool.submit(copy_context().run, list_documents, src, 0 if documents else max_documents, quote(feed) if feed else None)
            if feed is not None and feed.wait_beyond(STREAM_AFTER):
                refs = feed.refs  # grows while the batch runs: run_batch takes the rest from the feed
            else:
                feed = None
                refs = listing.result().refs
                if documents:
                    wanted = set(documents)
                    listed = [r for r in refs if r.name in wanted]
                    # Asked for but gone since the caller listed: still one row each, read (and so
                    # reported as vanished) like any file that disappears under a batch.
                    found = {r.name for r in listed}
                    gone = [name for name in dict.fromkeys(documents) if name not in found]
                    root = src.describe().rstrip("/")
                    listed += [DocumentRef(index=0, uri=f"{root}/{name}", name=name, size=0, fingerprint="gone") for name in gone]
                    refs = [ref.model_copy(update={"index": n}) for n, ref in enumerate(listed)]
                refuse_if_too_many(src, refs, max_documents)
            extractor = loading.result()
        except (SourceUnavailable, BatchRefused) as exc:
            # A refusal is an answer, not a crash: one clear line in the run's state, no traceback,
            # and Python callers get the exception itself.
            logger.warning("Batch refused: %s", exc)
            return Failed(message=str(exc), data=exc)  # type: ignore[return-value]
        folder = batch_folder_name(name, started, str(run_id) if run_id else None)
        key = settings_key(src, include or [], exclude or [], recursive, extractor, extraction)
        taken: dict[int, DocumentResult] = {}
        if resume:
            found = find_resumable(destination, key)
            if found is None:
                logger.info("Nothing to resume in %s for this batch: extracting every document", destination.location())
            else:
                folder, taken = found.folder, found.take(refs)
                logger.info(
                    "Resuming %s: %d of %d document(s) already have a result in its checkpoint%s",
                    destination.location(folder), len(taken), len(refs),
                    f" ({found.torn_lines} torn line(s) ignored)" if found.torn_lines else "",
                )
        parameters = BatchParameters(
            source=source, include=include or [], exclude=exclude or [], recursive=recursive,
            max_concurrency=max_concurrency, extraction=extraction.model_dump(mode="json"),
            export=export.model_dump(mode="json"), max_documents=max_documents,
        )
        return run_batch(
            refs=refs, feed=feed, listing=listing if feed is not None else None, taken=taken, resumed=len(taken), src=src,
            extractor=extractor, destination=destination, folder=folder, key=key, name=name, started=started,
            max_concurrency=max_concurrency, extraction=extraction, formats=export.formats, parameters=parameters,
        )
    finally:
        # However the batch ended (done, refused, failed), no listing outlives its flow run: one
        # still feeding it stops at its next reference (nothing to stop once it has ended).
        if feed is not None:
            feed.abandon()
        pool.shutdown()


def run_batch(
    *,
    refs: list[DocumentRef],
    feed: ListingFeed | None = None,
    listing: Future[DocumentListing] | None = None,
    taken: dict[int, DocumentResult],
    resumed: int,
    src: Source,
    extractor: Extractor,
    destination: Destination,
    folder: str,
    key: str,
    name: str,
    started: datetime,
    max_concurrency: int,
    extraction: ExtractionSettings,
    formats: list[ExportFormat],
    parameters: BatchParameters,
) -> BatchReport:
    """Extract `refs` except those already in `taken`, then collect: the body every batch flow shares.

    `taken` holds results that are not extracted again, by index (a checkpoint's on resume,
    an earlier batch's successes on retry-failed); `resumed` is how many count as resumed.
    With a `feed` (a listing still running in `listing`, more than `STREAM_AFTER` references
    in), `refs` is its list so far, `taken` is empty, and the shards take the references from
    the feed as they are listed.
    """
    logger = get_run_logger()
    run_id = flow_run.get_id()
    batch_id = run_id or uuid.uuid4().hex
    if feed is not None:
        todo = refs  # the feed's own list: complete once the listing has ended
        shards: list[list[DocumentRef]] = [[] for _ in range(max_concurrency)]
        sharded = True
    else:
        todo = [ref for ref in refs if ref.index not in taken]
        shards = [[todo[position] for position in shard] for shard in plan_shards(len(todo), max_concurrency)]
        sharded = len(todo) > PER_DOCUMENT_LIMIT
    options = ExtractOptions(
        batch_id=batch_id,
        max_concurrency=max_concurrency,
        max_file_bytes=int(extraction.max_file_size_mb * 1024 * 1024),
        keep_text=extraction.keep_text,
        log_each_document=not sharded,  # INFO lines cost 0.6-1 s per 1,000 documents
        shards=max(1, len(shards)),
        max_tokens=extraction.max_tokens_per_batch,
        max_cost=extraction.max_cost_per_batch,
        cache=extraction.cache,
        review_min_confidence=extraction.review_min_confidence,
    )
    logger.info(
        "Batch %r: %s from %s, %d task run(s), at most %d at once, extractor %s",
        name, f"{len(refs)} document(s)" if feed is None else f"{len(refs)} document(s) so far, extracted while the listing continues",
        src.describe(), len(shards), max_concurrency, extractor.label,
    )
    extract = extract_documents.with_options(
        retries=extraction.retries,
        retry_delay_seconds=[extraction.retry_backoff_s * 2**n for n in range(extraction.retries)] or 0,
    )

    journal = BatchJournal.open(destination, folder, JournalHeader(batch_key=key, batch_name=name, source=src.describe()))
    exports = ExportStream(destination, folder, formats, declared_fields=extractor.output_fields, expected=len(refs))
    table = DocumentsTable(name, 0 if feed is not None else len(refs))

    def stream(ready: list[DocumentResult], texts: list[str | None]) -> None:
        exports.add(ready, texts)
        if feed is not None and feed.done and table.total != len(refs):
            table.total = len(refs)  # the listing has ended: the table knows whether it is truncated
        table.offer(ordered.results)

    ordered = InOrder(stream)
    ordered.offer(taken.values())
    work = SharedWork(shards, feed) if sharded else None
    try:
        with batch_runtime(
            batch_id, max_concurrency, len(refs), progress_title=name, finished=len(taken), journal=journal, work=work,
            feed=feed,
        ) as runtime:
            if shards:
                # A runner per batch, bounded by the run's own max_concurrency parameter, so the
                # UI's value takes effect whatever task runner the flow was deployed with; the
                # batch's slots bound documents in flight in any case.
                with ThreadPoolTaskRunner(max_workers=min(max_concurrency, len(shards))) as runner:
                    mapped = {
                        "refs": [quote(shard) for shard in shards],
                        "source": unmapped(src),
                        "extractor": unmapped(extractor),
                        "options": unmapped(options),
                    }
                    if sharded:
                        mapped["shard"] = list(range(len(shards)))
                    futures = runner.map(extract, mapped)
                    stream_results(runtime.delivered, futures, ordered)
                    crashed = crashed_task_runs(futures)
                if listing is not None:
                    listing.result()  # ended once the shards ran dry; raises the error that stopped it early
                missing = [ref for ref in todo if ref.index not in ordered.seen]
                if missing:
                    owners = work.holders(ref.index for ref in missing) if work else {shard[0].index: n for n, shard in enumerate(shards)}
                    for n, exc in crashed.items():
                        lost = sum(owners.get(ref.index) == n for ref in missing)
                        logger.warning("Extraction task run %d of %d crashed, %d document(s) unfinished: %s", n + 1, len(shards), lost, exc)
                    ordered.offer([_shard_crashed(ref, crashed.get(owners.get(ref.index, -1)), extractor.label) for ref in missing])
        journal.close()
        report = collect_results(
            quote(ordered.results),
            name=name,
            source=src.describe(),
            extractor=extractor.label,
            started=started,
            flow_run_id=str(run_id) if run_id else None,
            destination=destination,
            folder=folder,
            exports=quote(exports),
            resumed=resumed,
            parameters=parameters,
            batch_key=key,
            table=quote(table),
        )
        runtime.settle()
    except BaseException:
        exports.close()  # nothing half-written under a final name; the journal stays for `resume`
        journal.close()
        raise
    journal.discard()
    if ExportFormat.review in formats:  # after report.json: the page is a view of the batch, never its failure
        write_review_page(
            quote(ordered.results), report=quote(report), source=src, destination=destination, folder=folder,
            extractor=extractor, options=review_options(parameters.export, extraction),
        )
    return report




def settings_key(src: Source, include: list[str], exclude: list[str], recursive: bool, extractor: Extractor, extraction: ExtractionSettings) -> str:
    """The key of everything that decides a document's result: equal keys, equal results."""
    # `fingerprint` holds what the settings do not show, e.g. a templates folder's content: a
    # changed template is a new configuration for resume and ingestion, though its path is not.
    return batch_key(
        source=src.describe(), include=include, exclude=exclude, recursive=recursive,
        extractor=extractor.label, extractor_settings=extractor.model_dump(mode="json"),
        extractor_fingerprint=extractor.fingerprint(),
        keep_text=extraction.keep_text, max_file_size_mb=extraction.max_file_size_mb,
        review_min_confidence=extraction.review_min_confidence,
    )


class InOrder:
    """Hands results on in input order, as soon as every earlier document has one.

    Task runs finish documents in any order and resumed results arrive first; the export
    stream must see documents 0, 1, 2, ... so its files keep input order while they are
    written. Each result may come with its JSON (`text`), serialised once for the journal and
    passed on so the exports need not serialise it again.
    """

    def __init__(self, sink: Callable[[list[DocumentResult], list[str | None]], None]) -> None:
        self.sink = sink
        self.waiting: dict[int, tuple[DocumentResult, str | None]] = {}
        self.results: list[DocumentResult] = []
        self.seen: set[int] = set()

    def offer(self, results: Iterable[DocumentResult | tuple[DocumentResult, str | None]]) -> None:
        for item in results:
            result, text = item if isinstance(item, tuple) else (item, None)
            self.waiting[result.ref.index] = (result, text)
            self.seen.add(result.ref.index)
        ready: list[DocumentResult] = []
        texts: list[str | None] = []
        while (index := len(self.results) + len(ready)) in self.waiting:
            result, text = self.waiting.pop(index)
            ready.append(result)
            texts.append(text)
        if ready:
            self.results.extend(ready)
            self.sink(ready, texts)
