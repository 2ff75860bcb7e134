"""Per-batch state shared by the extraction task runs of one flow run in this process.

Prefect task parameters must stay small and serialisable, so what only makes sense inside the
running process (the concurrency slots, the progress counter, results kept across a task's
retries) lives here, keyed by the batch id the flow hands to each task.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from blocks.models import DocumentResult
from tasks.artifacts import PROGRESS_KEY
from tasks.journal import BatchJournal
from tasks.listing import ListingFeed
from tasks.work import SharedWork

PROGRESS_EVERY_S = 1.0

log = logging.getLogger("docbatch.progress")


class OrderedSlots:
    """A counting semaphore that hands a freed slot to the waiter with the lowest priority.

    Extraction threads pass the document's index, so documents get slots in input order
    whenever more task runs are running than there are slots (another task runner, a thread
    pool larger than the bound): with a plain semaphore slots went at random, an early
    document could finish last, and every result after it waited for it before the exports
    could take it (measured: up to 0.4 s of stream work piled up at a batch's end).
    """

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()
        self._waiting: list[tuple[int, int, threading.Event]] = []
        self._arrivals = itertools.count()

    def acquire(self, priority: int) -> None:
        with self._lock:
            if self._free:
                self._free -= 1
                return
            turn = threading.Event()
            heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
        turn.wait()  # the releasing thread hands its slot over: nobody can take it in between

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                heapq.heappop(self._waiting)[2].set()
            else:
                self._free += 1

    def owes(self, priority: int) -> bool:
        """True when someone waits with a lower priority than `priority`: the holder must yield."""
        with self._lock:
            return bool(self._waiting) and self._waiting[0][0] < priority


class SlotHolder:
    """One shard's slot, kept from one document to the next unless an earlier document waits.

    Handing a slot over wakes another thread (a GIL round trip, measured at 0.1-1 ms under
    load); a shard that simply keeps its slot for its next document pays nothing.
    """

    def __init__(self, runtime: BatchRuntime) -> None:
        self.runtime = runtime
        self.held = False

    @contextlib.contextmanager
    def document(self, priority: int) -> Iterator[None]:
        """One document in flight, inside the slot (taken now unless already held)."""
        slots, runtime = self.runtime.slots, self.runtime
        if self.held and slots.owes(priority):
            self.release()
        if not self.held:
            slots.acquire(priority)
            self.held = True
        with runtime._lock:
            runtime.in_flight += 1
            runtime.peak_in_flight = max(runtime.peak_in_flight, runtime.in_flight)
        try:
            yield
        finally:
            with runtime._lock:
                runtime.in_flight -= 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.runtime.slots.release()


@dataclass
class BatchRuntime:
    """Concurrency slots, progress and retry memory of one running batch."""

    max_concurrency: int
    total: int = 0
    progress_artifact_id: UUID | None = None
    slots: OrderedSlots = field(init=False)
    in_flight: int = 0
    peak_in_flight: int = 0
    finished: int = 0
    kept: dict[str, dict[int, DocumentResult]] = field(default_factory=dict)
    journal: BatchJournal | None = None
    work: SharedWork | None = None
    feed: ListingFeed | None = None
    title: str = ""
    delivered: queue.SimpleQueue[tuple[DocumentResult, str] | None] | None = None
    last_progress: threading.Thread | None = None
    # Set by the first document whose error stops the whole batch (an API key the back-end
    # rejects): the documents not yet started are then skipped with this reason, not sent.
    stopped: str | None = None
    tokens_used: int = 0
    cost_used: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.slots = OrderedSlots(self.max_concurrency)

    @contextlib.contextmanager
    def slot(self, priority: int = 0) -> Iterator[None]:
        """Hold one of the batch's `max_concurrency` document slots for one document."""
        with self.shard_slots() as holder, holder.document(priority):
            yield

    @contextlib.contextmanager
    def shard_slots(self) -> Iterator[SlotHolder]:
        """A shard's hold on a slot across its documents, released when the shard ends."""
        holder = SlotHolder(self)
        try:
            yield holder
        finally:
            holder.release()

    def settle(self, timeout: float = 30.0) -> None:
        """Wait until the last progress update (sent while the batch is collected) has landed."""
        if self.last_progress is not None:
            self.last_progress.join(timeout)

    def spend(self, result: DocumentResult, options: Any) -> None:
        """Count a finished document's tokens and cost; past the batch's budget, stop starting documents."""
        with self._lock:
            self.tokens_used += (result.tokens_in or 0) + (result.tokens_out or 0)
            self.cost_used += result.cost or 0.0
            tokens, cost = self.tokens_used, self.cost_used
        if options.max_tokens and tokens >= options.max_tokens:
            self.stop(f"the batch's token budget of {options.max_tokens:,} was reached ({tokens:,} tokens used)")
        elif options.max_cost and cost >= options.max_cost:
            self.stop(f"the batch's cost budget of {options.max_cost:g} was reached ({cost:.4f} spent)")

    def stop(self, reason: str) -> None:
        """Skip every document not yet started, with `reason` (the first reason is kept)."""
        with self._lock:
            if self.stopped is None:
                self.stopped = reason

    def document_finished(self, result: DocumentResult) -> None:
        """Checkpoint one final result, count it and hand it to the flow.

        The batch's progress thread publishes the count; the flow's thread takes the result
        (with its JSON, serialised once for the journal and the exports) from `delivered` and
        streams it to the exports while the batch goes on, rather than when its task run ends.
        """
        text = result.model_dump_json()
        if self.journal is not None:
            self.journal.record(result, text)
        with self._lock:
            self.finished += 1
        if self.delivered is not None:
            self.delivered.put((result, text))

    def _publish_periodically(self, stop: threading.Event) -> None:
        """Create the progress artifact, then refresh it once a second until `stop`.

        Created here rather than by the flow: its API round trip (20-50 ms, more under load)
        then overlaps the first documents instead of delaying them.
        """
        from prefect.artifacts import create_progress_artifact

        published = self.finished  # documents taken from a checkpoint are finished already
        try:
            self.progress_artifact_id = create_progress_artifact(
                progress=self._percent(published),
                key=PROGRESS_KEY,
                description=self._describe(published),
            )
        except Exception as exc:  # progress is cosmetic: never let it fail the batch
            log.warning("could not create the progress artifact: %s", exc)
            return
        while not stop.wait(PROGRESS_EVERY_S):
            finished = self.finished
            if finished != published:
                self.publish_progress(finished)
                published = finished

    def known_total(self) -> tuple[int, bool]:
        """Documents in the batch so far, and whether that is final (not while a feeding listing runs)."""
        feed = self.feed
        if feed is not None and not feed.done:
            return len(feed.refs), False
        return (len(feed.refs) if feed is not None else self.total), True

    def _percent(self, finished: int) -> float:
        total, final = self.known_total()
        if not final:
            return 0.0
        return round(100.0 * finished / total, 1) if total else 100.0

    def _describe(self, finished: int) -> str:
        total, final = self.known_total()
        counted = f"{finished} of {total} documents finished" if final else f"{finished} of {total}+ documents finished (still listing)"
        return f"{self.title}: {counted}" if self.title else counted

    def publish_progress(self, finished: int | None = None) -> None:
        if self.progress_artifact_id is None or not self.known_total()[0]:
            return
        from prefect.artifacts import update_progress_artifact

        finished = self.finished if finished is None else finished
        try:
            update_progress_artifact(
                self.progress_artifact_id,
                progress=self._percent(finished),
                description=self._describe(finished),
            )
        except Exception as exc:  # progress is cosmetic: never let it fail a document
            log.warning("could not update the progress artifact: %s", exc)


_RUNTIMES: dict[str, BatchRuntime] = {}
_REGISTRY_LOCK = threading.Lock()


def runtime_for(batch_id: str, max_concurrency: int) -> BatchRuntime:
    """The batch's runtime in this process, created on first use.

    A task that runs in another process (a distributed task runner) gets its own runtime
    there, so the bound then holds per process; the default thread runner shares one.
    """
    with _REGISTRY_LOCK:
        runtime = _RUNTIMES.get(batch_id)
        if runtime is None:
            runtime = _RUNTIMES[batch_id] = BatchRuntime(max_concurrency=max_concurrency)
        return runtime


@contextlib.contextmanager
def batch_runtime(
    batch_id: str,
    max_concurrency: int,
    total: int,
    *,
    progress_title: str | None = None,
    finished: int = 0,
    journal: BatchJournal | None = None,
    work: SharedWork | None = None,
    feed: ListingFeed | None = None,
) -> Iterator[BatchRuntime]:
    """The batch's runtime, with a thread that keeps a progress artifact (`progress_title`: the
    batch's name; None for no artifact) up to date once a second.

    Each final result is put on `runtime.delivered`, which the caller drains; `work` holds a
    sharded batch's document queues; `feed`, the listing still running, whose count is the
    batch's total once it ends (`total` is then ignored).

    Publishing from that thread rather than from the extraction threads keeps a blocking API
    call out of every shard's path (measured: about 0.4 s of a 10,000-document batch).
    """
    runtime = runtime_for(batch_id, max_concurrency)
    runtime.total = total
    runtime.finished = finished  # documents taken from a checkpoint count as finished
    runtime.journal = journal
    runtime.work = work
    runtime.feed = feed
    runtime.title = progress_title or ""
    runtime.delivered = queue.SimpleQueue()
    stop = threading.Event()
    publisher = threading.Thread(
        target=contextvars.copy_context().run,  # the Prefect client settings of the flow run
        args=(runtime._publish_periodically, stop),
        name="docbatch-progress",
        daemon=True,
    )
    if progress_title is not None:
        publisher.start()
    try:
        yield runtime
    finally:
        stop.set()

        def last_word() -> None:
            # Only once the thread is done (and the artifact exists), so an older value still
            # in flight from it can never land after this one.
            if publisher.is_alive():
                publisher.join()
            runtime.publish_progress()

        # Sent beside the collector's work (an API round trip, up to 0.1 s under load), and
        # awaited by `settle`.
        runtime.last_progress = threading.Thread(
            target=contextvars.copy_context().run, args=(last_word,), name="docbatch-progress-last", daemon=True,
        )
        runtime.last_progress.start()
        with _REGISTRY_LOCK:
            _RUNTIMES.pop(batch_id, None)
