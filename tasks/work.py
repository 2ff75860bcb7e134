"""The not-yet-started documents of a sharded batch, shared between its task runs.

Each shard has its own queue, filled by the flow from the shard plan. A task run takes its
next document from the front of its own queue; once that is empty it takes the last document
of the longest other queue (work stealing). A document leaves a queue once, under one lock, so
no two task runs ever extract it; the shards' tails then end within about one document of each
other instead of one slow shard finishing alone.

A batch whose listing is still running is fed from it (`tasks.listing.ListingFeed`): new
references are dealt to the queues in turn as they are listed, a task run whose queue is empty
waits for the next ones, and stealing starts only once the listing has ended (before that, an
empty queue only means the listing has not reached that shard's next document yet).

Stealing only exists inside one process: the flow runs its task runs on its own thread pool,
and a task run that finds no queue registered for its shard (called outside a docbatch flow)
extracts exactly the documents it was given.
"""

from __future__ import annotations

import threading
from array import array
from collections import deque
from collections.abc import Iterable, Sequence

from blocks.models import DocumentRef
from tasks.listing import ListingFeed


class SharedWork:
    """Per-shard queues of documents, with stealing from the longest when a shard's own is empty."""

    def __init__(self, shards: Iterable[Sequence[DocumentRef]], feed: ListingFeed | None = None) -> None:
        """`shards`: each shard's documents; with a `feed`, the listing's references are dealt
        to the shards in turn on top (reference k of the feed to shard k mod n)."""
        self._queues = [deque(shard) for shard in shards]
        self._lock = threading.Lock()
        # Which shard took each document, by index (-1: none yet): a byte each, not a dict entry
        # (10 MB per 100,000 documents); shards are at most 64.
        self._taken_by = array("b")
        self._feed = feed
        self._dealt = 0
        self.stolen_by = [0] * len(self._queues)  # per shard: documents it took from another's queue

    @property
    def stolen(self) -> int:
        return sum(self.stolen_by)

    def __len__(self) -> int:
        return len(self._queues)

    def _deal(self) -> bool:
        """Deal the references listed since the last call; True once the listing has ended and all are dealt."""
        feed = self._feed
        if feed is None:
            return True
        ended = feed.done  # read first: every reference listed before it ended is dealt below
        listed = feed.refs
        count = len(self._queues)
        while self._dealt < len(listed):
            self._queues[self._dealt % count].append(listed[self._dealt])
            self._dealt += 1
        return ended

    def take(self, shard: int, *, steal: bool = True) -> DocumentRef | None:
        """The next document for `shard`'s task run, or None when there is nothing left for it.

        While a feeding listing runs, waits for the listing to reach this shard's next document.
        """
        while True:
            with self._lock:
                ended = self._deal()
                own = self._queues[shard]
                if own:
                    ref = own.popleft()
                elif not ended:
                    ref = None
                else:
                    if not steal:
                        return None
                    busiest = max(self._queues, key=len)
                    if not busiest:
                        return None
                    ref = busiest.pop()  # its last document: the one its own shard would reach last
                    self.stolen_by[shard] += 1
                if ref is not None:
                    if ref.index >= len(self._taken_by):
                        self._taken_by.extend([-1] * (ref.index + 1 - len(self._taken_by)))
                    self._taken_by[ref.index] = shard
                    return ref
                dealt = self._dealt
            assert self._feed is not None
            self._feed.wait_beyond(dealt)

    def holders(self, indices: Iterable[int]) -> dict[int, int]:
        """For each document index: the shard whose task run took it, or whose queue still holds it."""
        with self._lock:
            self._deal()
            queued = {ref.index: shard for shard, queue in enumerate(self._queues) for ref in queue}
            taken = {index: shard for index, shard in enumerate(self._taken_by) if shard >= 0}
            found = {**queued, **taken}
        return {index: found[index] for index in indices if index in found}
