"""How a batch is cut into task runs.

Up to `PER_DOCUMENT_LIMIT` documents, each document gets its own task run: the Prefect UI then
shows one row per file, with its own state, logs and retries. Above it, the batch gets one task
run per concurrency slot (a shard), and the documents are dealt out in turn: shard k of n takes
documents k, k + n, k + 2n, ... Why this shape:

- Few task runs: each one costs this machine's Prefect server about 60 ms of CPU to record, and
  the client 10-16 ms of engine work. Shards of up to 250 documents whose size shrank towards the
  end (guided self-scheduling) still made 68 task runs at 1,000 documents, and the server's work
  recording them slowed the batch's own threads on 2 cores.
- Dealt in turn, not cut in blocks: every shard moves through the batch from its start, so the
  export stream (which needs documents in input order) gets results all along instead of in
  bulk when the first block ends.
- No ragged tail: a shard that runs out of documents takes the last not-yet-started ones of
  the busiest other shard (`tasks.work.SharedWork`), so all slots stay busy until the last few
  documents, whatever their sizes.
"""

from __future__ import annotations

PER_DOCUMENT_LIMIT = 100


def is_sharded(documents: int, streamed: bool = False) -> bool:
    """Whether a share's documents go to one task run per slot (`plan_shards` above the limit, or
    dealt from a listing still running) rather than one task run each."""
    return streamed or documents > PER_DOCUMENT_LIMIT


def plan_shards(total: int, max_concurrency: int, *, per_document_limit: int = PER_DOCUMENT_LIMIT) -> list[range]:
    """Positions (0 .. total-1) of each task run's documents, in the order it extracts them.

    Every position appears in exactly one shard.
    """
    if total <= per_document_limit:
        return [range(i, i + 1) for i in range(total)]
    count = min(max_concurrency, total)
    return [range(k, total, count) for k in range(count)]
