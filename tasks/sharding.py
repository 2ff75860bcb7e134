"""How a batch is cut into task runs.

Up to `PER_DOCUMENT_LIMIT` documents, each document gets its own task run: the Prefect UI then
shows one row per file, with its own state, logs and retries. Above it, documents go in shards
whose sizes shrink towards the end of the batch (guided self-scheduling): big shards keep the
number of task runs, and so Prefect's per-run cost, low; small last shards keep every
concurrency slot busy until the end instead of one slow shard finishing alone.
"""

from __future__ import annotations

import math

PER_DOCUMENT_LIMIT = 100
MAX_SHARD = 250
MIN_SHARD = 2  # tail shards: a slot left alone with k documents idles the others up to k-1 documents (0.14 s per slot at k = 4, N = 1,000; 0.06 s at k = 2), while each extra task run costs 10-16 ms of engine work


def plan_shards(total: int, max_concurrency: int, *, per_document_limit: int = PER_DOCUMENT_LIMIT, max_shard: int = MAX_SHARD) -> list[tuple[int, int]]:
    """Half-open `(start, end)` ranges over `total` documents, in order, covering each once."""
    if total <= per_document_limit:
        return [(i, i + 1) for i in range(total)]
    shards: list[tuple[int, int]] = []
    # The tail's smallest shard, but never more than one slot's fair share (total / max_concurrency),
    # so a batch just over the per-document limit still spreads over the slots.
    floor = min(MIN_SHARD, math.ceil(total / max_concurrency))
    start = 0
    while start < total:
        remaining = total - start
        size = min(remaining, max(floor, min(max_shard, math.ceil(remaining / (2 * max_concurrency)))))
        shards.append((start, start + size))
        start += size
    return shards


# Task runs that may be Running beside the max_concurrency ones in a sharded batch: they wait
# for a slot with their engine start-up already done, so no slot idles between two shards.
SPARE_SHARD_THREADS = 2
