"""The not-yet-started documents of a sharded batch, shared between its task runs.

Each shard has its own queue, filled by the flow from the shard plan. A task run takes its
next document from the front of its own queue; once that is empty it takes the last document
of the longest other queue (work stealing). A document leaves a queue once, under one lock, so
no two task runs ever extract it; the shards' tails then end within about one document of each
other instead of one slow shard finishing alone.

Stealing only exists inside one process: the flow runs its task runs on its own thread pool,
and a task run that finds no queue registered for its shard (called outside a docbatch flow)
extracts exactly the documents it was given.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Sequence

from blocks.models import DocumentRef


class SharedWork:
    """Per-shard queues of documents, with stealing from the longest when a shard's own is empty."""

    def __init__(self, shards: Iterable[Sequence[DocumentRef]]) -> None:
        self._queues = [deque(shard) for shard in shards]
        self._lock = threading.Lock()
        self._taken_by: dict[int, int] = {}
        self.stolen = 0

    def __len__(self) -> int:
        return len(self._queues)

    def take(self, shard: int, *, steal: bool = True) -> DocumentRef | None:
        """The next document for `shard`'s task run, or None when there is nothing left for it."""
        with self._lock:
            own = self._queues[shard]
            if own:
                ref = own.popleft()
            else:
                if not steal:
                    return None
                busiest = max(self._queues, key=len)
                if not busiest:
                    return None
                ref = busiest.pop()  # its last document: the one its own shard would reach last
                self.stolen += 1
            self._taken_by[ref.index] = shard
            return ref

    def holders(self, indices: Iterable[int]) -> dict[int, int]:
        """For each document index: the shard whose task run took it, or whose queue still holds it."""
        with self._lock:
            queued = {ref.index: shard for shard, queue in enumerate(self._queues) for ref in queue}
            found = {**queued, **self._taken_by}
        return {index: found[index] for index in indices if index in found}
