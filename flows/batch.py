"""The batch flow: one flow run turns one folder into structured records and exports."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import copy_context
from datetime import datetime, timezone
from typing import Annotated

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote
from pydantic import Field

from blocks.models import BatchParameters, BatchReport, DocumentRef, DocumentResult, ExportFormat
from blocks.resolve import Source
from flows.params import ExportSettings, ExtractionSettings
from flows.fanout import FanOutPlan, plan_fan_out, shared_spec
from flows.setup import REFUSALS, BatchSetup, prepare_batch, refused
from tasks.artifacts import DocumentsTable
from tasks.collect import BatchTally, batch_folder_name, collect_results
from tasks.database import DatabaseSink
from tasks.exports import PROCESS_FROM, ExportStream
from tasks.extract import batch_options, extraction_task
from tasks.journal import JournalHeader, SegmentTail, SegmentWriter, discard_checkpoint, find_resumable, new_run_token
from tasks.listing import DocumentListing, ListingFeed, list_documents, read_listing, refuse_if_too_many
from tasks.progress import ProgressPublisher
from tasks.review_page import review_options, write_review_page
from tasks.share import crashed_row, run_share
from tasks.sharding import PER_DOCUMENT_LIMIT

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
    listing: str = "",
    workers: Annotated[int, Field(ge=0, le=256)] = 0,
    work_pool: str = "",
    shared_path: bool = False,
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
        listing: Set by ingestion: a listing of the documents to extract (JSON lines of document references, a path under the export destination), read instead of listing the source again.
        resume: Continue the newest unfinished run of this same batch (same source, filters and extractor settings) in the output folder: documents its checkpoint already holds are not extracted again.
        workers: 0: extract in this flow run's process. K > 0: fan out over a work pool, as K child flow runs of the 'extract-shard' deployment, each extracting every K-th document with max_concurrency at once; the source and destination must be reachable from every worker (S3, or a shared path).
        work_pool: With workers > 0: the work pool whose workers run the shares; empty: the pool 'extract-shard' is deployed to.
        shared_path: With workers > 0: a local source or output folder is the same path on every worker (a network share); without it a local folder is refused.
    """
    logger = get_run_logger()
    started = datetime.now(timezone.utc)
    run_id = flow_run.get_id()
    name = (batch_name or "").strip() or (flow_run.get_name() if run_id else None) or default_batch_name()

    # Loading a saved extractor block is an API round trip: let it overlap the listing. A batch
    # without a document limit, filter or checkpoint to honour does not wait for its listing to
    # end either: past `STREAM_AFTER` references it starts extracting while the listing goes on.
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="docbatch-setup")
    feed = ListingFeed() if max_documents == 0 and not documents and not listing and not resume and not workers else None
    if workers and shared_path:
        source, export = shared_spec(source), export.model_copy(update={"output_dir": shared_spec(export.output_dir)})
    try:
        try:
            setup = prepare_batch(source, include, exclude, recursive, extraction, export.output_dir, background=pool, database=export.database)
            src = setup.src
            fan_out = plan_fan_out(setup, workers, work_pool, shared_path) if workers else None
            lister: Future[DocumentListing] | None = None
            if listing:  # handed over by ingestion, which has just listed the source
                refs = [ref.model_copy(update={"index": n}) for n, ref in enumerate(read_listing(setup.destination, listing))]
            else:
                lister = pool.submit(copy_context().run, list_documents, src, 0 if documents else max_documents, quote(feed) if feed else None)
            if feed is not None and lister is not None and feed.wait_beyond(STREAM_AFTER):
                refs = feed.refs  # grows while the batch runs: run_batch takes the rest from the feed
            else:
                feed = None
                if lister is not None:
                    refs = lister.result().refs
                if documents:
                    refs = chosen(src, refs, documents)
                refuse_if_too_many(src, refs, max_documents)
            setup.extractor  # noqa: B018 - raises the extractor's refusal, before any work
        except REFUSALS as exc:
            return refused(exc)  # type: ignore[return-value]
        folder = batch_folder_name(name, started, str(run_id) if run_id else None)
        taken: dict[int, DocumentResult] = {}
        if resume:
            found = find_resumable(setup.destination, setup.key)
            if found is None:
                logger.info("Nothing to resume in %s for this batch: extracting every document", setup.destination.location())
            else:
                folder, taken = found.folder, found.take(refs)
                logger.info(
                    "Resuming %s: %d of %d document(s) already have a result in its checkpoint%s",
                    setup.destination.location(folder), len(taken), len(refs),
                    f" ({found.torn_lines} torn line(s) ignored)" if found.torn_lines else "",
                )
        parameters = BatchParameters(
            source=source, include=include or [], exclude=exclude or [], recursive=recursive,
            max_concurrency=max_concurrency, extraction=extraction.model_dump(mode="json"),
            export=export.model_dump(mode="json"), max_documents=max_documents, workers=workers, work_pool=work_pool,
            shared_path=shared_path,
        )
        return run_batch(
            refs=refs, feed=feed, listing=lister if feed is not None else None, taken=taken, resumed=len(taken), setup=setup,
            folder=folder, name=name, started=started, max_concurrency=max_concurrency, formats=export.formats,
            parameters=parameters, fan_out=fan_out,
        )
    finally:
        # However the batch ended (done, refused, failed), no listing outlives its flow run: one
        # still feeding it stops at its next reference (nothing to stop once it has ended).
        if feed is not None:
            feed.abandon()
        pool.shutdown()


def chosen(src: Source, refs: list[DocumentRef], documents: list[str]) -> list[DocumentRef]:
    """The listed references named in `documents`, renumbered in listing order.

    Asked for but gone since the caller listed: still one row each, read (and so reported as
    vanished) like any file that disappears under a batch.
    """
    wanted = set(documents)
    listed = [r for r in refs if r.name in wanted]
    found = {r.name for r in listed}
    gone = [name for name in dict.fromkeys(documents) if name not in found]
    root = src.describe().rstrip("/")
    listed += [DocumentRef(index=0, uri=f"{root}/{name}", name=name, size=0, fingerprint="gone") for name in gone]
    return [ref.model_copy(update={"index": n}) for n, ref in enumerate(listed)]


class Merger:
    """The flow's reader of the batch's segments: results in input order to the exports, as they land.

    A thread of the flow polls the segments every `interval` seconds (`tasks.journal.SegmentTail`)
    and offers what it finds to `ordered`; `finish` reads one last time once every share has
    ended, and raises whatever stopped the thread (an export that could not be written).
    """

    def __init__(self, tail: SegmentTail, ordered: InOrder, interval: float) -> None:
        self.tail = tail
        self.ordered = ordered
        self.interval = interval
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=copy_context().run, args=(self._run,), name="docbatch-merge", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _take(self) -> None:
        found = self.tail.poll()
        if found:
            self.ordered.offer(found)

    def _run(self) -> None:
        try:
            while not self._done.wait(self.interval):
                self._take()
        except BaseException as exc:  # noqa: BLE001 - raised again by `finish`, in the flow's thread
            self._error = exc

    def finish(self) -> None:
        self._done.set()
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._take()


def run_batch(
    *,
    refs: list[DocumentRef],
    feed: ListingFeed | None = None,
    listing: Future[DocumentListing] | None = None,
    taken: dict[int, DocumentResult],
    resumed: int,
    setup: BatchSetup,
    folder: str,
    name: str,
    started: datetime,
    max_concurrency: int,
    formats: list[ExportFormat],
    parameters: BatchParameters,
    fan_out: FanOutPlan | None = None,
) -> BatchReport:
    """Extract `refs` except those already in `taken`, then collect: the body every batch flow shares.

    `taken` holds results that are not extracted again, by index (a checkpoint's on resume,
    an earlier batch's successes on retry-failed); `resumed` is how many count as resumed.
    With a `feed` (a listing still running in `listing`, more than `STREAM_AFTER` references
    in), `refs` is its list so far, `taken` is empty, and the shards take the references from
    the feed as they are listed.

    Results travel one road: the share appends each to its segment at the destination, and
    the `Merger` reads the segments into the exports in input order. With a `fan_out` plan the
    shares are child flow runs on a work pool's workers (`flows.fanout`), else one share runs
    here.
    """
    logger = get_run_logger()
    run_id = flow_run.get_id()
    src, extractor, destination, extraction, key = setup.src, setup.extractor, setup.destination, setup.extraction, setup.key
    todo = refs if feed is not None else [ref for ref in refs if ref.index not in taken]
    options = batch_options(
        extraction, batch_id=str(run_id) if run_id else uuid.uuid4().hex, max_concurrency=max_concurrency,
        documents=len(todo), streamed=feed is not None,
    )
    logger.info(
        "Batch %r: %s from %s, %d task run(s), at most %d at once, extractor %s",
        name, f"{len(refs)} document(s)" if feed is None else f"{len(refs)} document(s) so far, extracted while the listing continues",
        src.describe(), options.shards if todo or feed is not None else 0, max_concurrency, extractor.label,
    )

    run = new_run_token()
    exports = ExportStream(
        destination, folder, formats, declared_fields=extractor.output_fields, expected=len(refs),
        per_document=bool(parameters.export.get("per_document")),
        database=DatabaseSink(setup.database, folder, setup.extraction_key) if setup.database is not None else None,
    )
    table = DocumentsTable(name, 0 if feed is not None else len(refs))

    def stream(ready: list[DocumentResult], texts: list[str | None]) -> None:
        exports.add(ready, texts)
        if feed is not None and feed.done and table.total != len(refs):
            table.total = len(refs)  # the listing has ended: the table knows whether it is truncated
        tally.add(ready)
        table.offer(ready)

    def total() -> tuple[int, bool]:
        if feed is not None and not feed.done:
            return len(feed.refs), False
        return len(refs), True

    tally = BatchTally()
    ordered = InOrder(stream)
    ordered.offer(taken.values())
    merger = Merger(SegmentTail(destination, folder, run), ordered, interval=MERGE_EVERY_S.get(type(destination).__name__, 0.1))
    progress = ProgressPublisher(name, lambda: ordered.count, total)
    segment: SegmentWriter | None = None
    try:
        if fan_out is None and (todo or feed is not None):
            header = JournalHeader(batch_key=key, batch_name=name, source=src.describe(), run=run, share=0)
            segment = SegmentWriter.open(destination, folder, header)
        progress.start()
        merger.start()
        lost: dict[int, DocumentResult] = {}
        try:
            if fan_out is not None:
                lost = fan_out.run(todo, run=run, folder=folder, name=name, max_concurrency=max_concurrency, key=key, label=extractor.label)
            elif segment is not None:
                run_share(refs=todo, feed=feed, source=src, extractor=extractor, options=options, segment=segment, task=extraction_task(extraction))
            if listing is not None:
                listing.result()  # ended once the shards ran dry; raises the error that stopped it early
        finally:
            if segment is not None:
                segment.close()  # on S3: uploads its last lines, which the merger's last read takes
            merger.finish()
            progress.stop()
        missing = [ref for ref in todo if not ordered.has(ref.index)]
        if missing:  # a share records every document: only a failed child (or a lost line) gets here
            ordered.offer([lost.get(ref.index) or crashed_row(ref, None, extractor.label) for ref in missing])
        report = collect_results(
            quote(tally),
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
            extraction_key=setup.extraction_key,
            table=quote(table),
        )
        progress.settle()
    except BaseException:
        exports.close()  # nothing half-written under a final name; the segments stay for `resume`
        raise
    discard_checkpoint(destination, folder)
    if ExportFormat.review in formats:  # after report.json: the page is a view of the batch, never its failure
        if tally.kept is None:
            logger.info("review.html shows the %d document(s) needing review that it kept (all %d results are in report.json)",
                        len(tally.review_results), tally.total)
        write_review_page(
            quote(tally.kept if tally.kept is not None else tally.review_results), report=quote(report), source=src, destination=destination, folder=folder,
            extractor=extractor, options=review_options(parameters.export, extraction),
        )
    return report


# How often the flow reads the segments: a local file costs a stat and a read; an S3 prefix a
# listing per segment, and its writers upload every 2 s anyway.
MERGE_EVERY_S = {"S3Destination": 1.0}


class InOrder:
    """Hands results on in input order, as soon as every earlier document has one.

    Task runs finish documents in any order and resumed results arrive first; the export
    stream must see documents 0, 1, 2, ... so its files keep input order while they are
    written. Each result may come with its JSON (`text`), as its segment line holds it, passed
    on so the exports need not serialise it again. A document offered twice (a share started
    again recorded it too) is taken once. Nothing is kept once handed on.
    """

    def __init__(self, sink: Callable[[list[DocumentResult], list[str | None]], None]) -> None:
        self.sink = sink
        self.waiting: dict[int, tuple[DocumentResult, str | None]] = {}
        self.handed = 0

    @property
    def count(self) -> int:
        """Documents with a result so far."""
        return self.handed + len(self.waiting)

    def has(self, index: int) -> bool:
        return index < self.handed or index in self.waiting

    def offer(self, results: Iterable[DocumentResult | tuple[DocumentResult, str | None]]) -> None:
        for item in results:
            result, text = item if isinstance(item, tuple) else (item, None)
            if not self.has(result.ref.index):
                self.waiting[result.ref.index] = (result, text)
        ready: list[DocumentResult] = []
        texts: list[str | None] = []
        while (index := self.handed + len(ready)) in self.waiting:
            result, text = self.waiting.pop(index)
            ready.append(result)
            texts.append(text)
        if ready:
            self.handed += len(ready)
            self.sink(ready, texts)
