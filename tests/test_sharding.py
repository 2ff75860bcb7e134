"""The shard plan: every document exactly once, in order, with enough shards to fill the slots."""

from __future__ import annotations

import pytest

from tasks.sharding import MAX_SHARD, MIN_SHARD, PER_DOCUMENT_LIMIT, plan_shards


@pytest.mark.parametrize(("total", "concurrency"), [(0, 4), (1, 1), (100, 4), (101, 4), (103, 64), (1000, 8), (10000, 8), (12345, 3)])
def test_plan_covers_every_document_once_in_order(total: int, concurrency: int) -> None:
    shards = plan_shards(total, concurrency)
    assert [i for start, end in shards for i in range(start, end)] == list(range(total))
    sizes = [end - start for start, end in shards]
    assert all(1 <= size <= MAX_SHARD for size in sizes)
    if total > PER_DOCUMENT_LIMIT:
        assert len(shards) >= min(concurrency, total // MIN_SHARD)  # enough shards to fill the slots
        assert sizes == sorted(sizes, reverse=True)  # large first, small last
        assert min(sizes[:-1] or [MIN_SHARD]) >= min(MIN_SHARD, -(-total // concurrency))


def test_small_batches_get_one_task_run_per_document() -> None:
    assert plan_shards(PER_DOCUMENT_LIMIT, 8) == [(i, i + 1) for i in range(PER_DOCUMENT_LIMIT)]
    assert len(plan_shards(10000, 8)) < 150
