"""The concurrency bound of the extraction threads of one process: documents in flight, in input order."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import threading
from collections.abc import Iterator


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


class DocumentSlots:
    """The `max_concurrency` slots of one share's task runs, with a count of documents in flight."""

    def __init__(self, max_concurrency: int) -> None:
        self.slots = OrderedSlots(max_concurrency)
        self.in_flight = 0
        self.peak_in_flight = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def shard(self) -> Iterator[SlotHolder]:
        """A shard's hold on a slot across its documents, released when the shard ends."""
        holder = SlotHolder(self)
        try:
            yield holder
        finally:
            holder.release()

    @contextlib.contextmanager
    def document(self, priority: int = 0) -> Iterator[None]:
        """One slot for one document (a caller that is not a shard)."""
        with self.shard() as holder, holder.document(priority):
            yield


class SlotHolder:
    """One shard's slot, kept from one document to the next unless an earlier document waits.

    Handing a slot over wakes another thread (a GIL round trip, measured at 0.1-1 ms under
    load); a shard that simply keeps its slot for its next document pays nothing.
    """

    def __init__(self, owner: DocumentSlots) -> None:
        self.owner = owner
        self.held = False

    @contextlib.contextmanager
    def document(self, priority: int) -> Iterator[None]:
        """One document in flight, inside the slot (taken now unless already held)."""
        owner, slots = self.owner, self.owner.slots
        if self.held and slots.owes(priority):
            self.release()
        if not self.held:
            slots.acquire(priority)
            self.held = True
        with owner._lock:
            owner.in_flight += 1
            owner.peak_in_flight = max(owner.peak_in_flight, owner.in_flight)
        try:
            yield
        finally:
            with owner._lock:
                owner.in_flight -= 1

    def release(self) -> None:
        if self.held:
            self.held = False
            self.owner.slots.release()
