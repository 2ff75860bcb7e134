"""The batch flow: one flow run turns one folder into structured records and exports."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timezone
from typing import Annotated

from prefect import flow, unmapped
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
from tasks.collect import batch_folder_name, collect_results
from tasks.exports import ExportStream
from tasks.journal import BatchJournal, JournalHeader, batch_key, find_resumable
from tasks.extract import ExtractOptions, extract_documents
from tasks.listing import list_documents, refuse_if_too_many
from tasks.runtime import batch_runtime
from tasks.sharding import PER_DOCUMENT_LIMIT, SPARE_SHARD_THREADS, plan_shards



def default_batch_name(now: datetime | None = None) -> str:
    return f"Batch {(now or datetime.now()).astimezone():%Y-%m-%d %H:%M}"


def batch_run_name() -> str:
    """Flow run name: the batch name, or `Batch YYYY-MM-DD HH:mm`."""
    name = (flow_run.parameters.get("batch_name") or "").strip()
    return name or default_batch_name()


def _shard_crashed(refs: list[DocumentRef], exc: BaseException, extractor: str) -> list[DocumentResult]:
    error = exc if isinstance(exc, DocumentError) else DocumentError(ErrorKind.internal, f"extraction task crashed: {type(exc).__name__}: {exc}")
    return [
        DocumentResult(ref=ref, status="failed", error=error.message, error_kind=error.kind, error_transient=error.transient, extractor=extractor)
        for ref in refs
    ]


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
        max_documents: Refuse, before any work, a batch with more documents than this; 0 means unlimited.
        documents: Only these documents, by their name relative to the source (as in a report's results); empty extracts every listed document. Ingestion and retry-failed set it.
        resume: Continue the newest unfinished run of this same batch (same source, filters and extractor settings) in the output folder: documents its checkpoint already holds are not extracted again.
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    run_id = flow_run.get_id()
    name = (batch_name or "").strip() or (flow_run.get_name() if run_id else None) or default_batch_name()

    try:
        src = resolve_source(source, include=include or [], exclude=exclude or [], recursive=recursive)
        src.check()
        # Loading a saved extractor block is an API round trip: let it overlap the listing.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="docbatch-setup") as pool:
            loading = pool.submit(copy_context().run, resolve_extractor, extraction.extractor, max_pages=extraction.max_pages)
            destination = resolve_destination(export.output_dir)
            destination.check()
            refs = list_documents(src, 0 if documents else max_documents)
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
        refs=refs, taken=taken, resumed=len(taken), src=src, extractor=extractor, destination=destination,
        folder=folder, key=key, name=name, started=started, max_concurrency=max_concurrency,
        extraction=extraction, formats=export.formats, parameters=parameters,
    )


def run_batch(
    *,
    refs: list[DocumentRef],
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
    """
    logger = get_run_logger()
    run_id = flow_run.get_id()
    batch_id = run_id or uuid.uuid4().hex
    todo = [ref for ref in refs if ref.index not in taken]
    shards = plan_shards(len(todo), max_concurrency)
    options = ExtractOptions(
        batch_id=batch_id,
        max_concurrency=max_concurrency,
        max_file_bytes=int(extraction.max_file_size_mb * 1024 * 1024),
        keep_text=extraction.keep_text,
        log_each_document=len(todo) <= PER_DOCUMENT_LIMIT,  # INFO lines cost 0.6-1 s per 1,000 documents
    )
    logger.info(
        "Batch %r: %d document(s) from %s, %d task run(s), at most %d at once, extractor %s",
        name, len(refs), src.describe(), len(shards), max_concurrency, extractor.label,
    )
    extract = extract_documents.with_options(
        retries=extraction.retries,
        retry_delay_seconds=[extraction.retry_backoff_s * 2**n for n in range(extraction.retries)] or 0,
    )

    journal = BatchJournal.open(destination, folder, JournalHeader(batch_key=key, batch_name=name, source=src.describe()))
    exports = ExportStream(destination, folder, formats, declared_fields=extractor.output_fields, expected=len(refs))
    ordered = InOrder(len(refs), exports.add)
    ordered.offer(taken.values())
    try:
        with batch_runtime(batch_id, max_concurrency, len(refs), progress_title=name, finished=len(taken), journal=journal) as runtime:
            if shards:
                # A runner per batch, bounded by the run's own max_concurrency parameter, so the
                # UI's value takes effect whatever task runner the flow was deployed with. With
                # shards, spare threads start the next task run while the slots are still busy
                # (a task run's start and end cost 10-16 ms of engine work that would otherwise
                # leave a slot idle); the batch's semaphore still bounds documents in flight.
                spare = SPARE_SHARD_THREADS if len(todo) > PER_DOCUMENT_LIMIT else 0
                with ThreadPoolTaskRunner(max_workers=min(max_concurrency + spare, len(shards))) as runner:
                    futures = runner.map(
                        extract,
                        {
                            "refs": [quote(todo[start:end]) for start, end in shards],
                            "source": unmapped(src),
                            "extractor": unmapped(extractor),
                            "options": unmapped(options),
                        },
                    )
                    for (start, end), future in zip(shards, futures):
                        try:
                            ordered.offer(future.result())
                        except BaseException as exc:  # a crashed shard still yields one row per document
                            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                                raise
                            logger.warning("Extraction of documents %d-%d crashed: %s", todo[start].index, todo[end - 1].index, exc)
                            ordered.offer(_shard_crashed(todo[start:end], exc, extractor.label))
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
        )
        runtime.settle()
    except BaseException:
        exports.close()  # nothing half-written under a final name; the journal stays for `resume`
        journal.close()
        raise
    journal.discard()
    return report




def settings_key(src: Source, include: list[str], exclude: list[str], recursive: bool, extractor: Extractor, extraction: ExtractionSettings) -> str:
    """The key of everything that decides a document's result: equal keys, equal results."""
    return batch_key(
        source=src.describe(), include=include, exclude=exclude, recursive=recursive,
        extractor=extractor.label, extractor_settings=extractor.model_dump(mode="json"),
        keep_text=extraction.keep_text, max_file_size_mb=extraction.max_file_size_mb,
    )


class InOrder:
    """Hands results on in input order, as soon as every earlier document has one.

    Shards finish in any order and resumed results arrive first; the export stream must see
    documents 0, 1, 2, ... so its files keep input order while they are written.
    """

    def __init__(self, total: int, sink: Callable[[list[DocumentResult]], None]) -> None:
        self.total = total
        self.sink = sink
        self.waiting: dict[int, DocumentResult] = {}
        self.results: list[DocumentResult] = []

    def offer(self, results: Iterable[DocumentResult]) -> None:
        for result in results:
            self.waiting[result.ref.index] = result
        ready: list[DocumentResult] = []
        while (index := len(self.results) + len(ready)) in self.waiting:
            ready.append(self.waiting.pop(index))
        if ready:
            self.results.extend(ready)
            self.sink(ready)
