"""The shard plan and the shared work queues: every document exactly once, slots kept busy to the end."""

from __future__ import annotations

import threading
import time

import pytest

from blocks.models import DocumentRef
from tasks.listing import ListingFeed
from tasks.sharding import PER_DOCUMENT_LIMIT, plan_shards
from tasks.work import SharedWork


@pytest.mark.parametrize(("total", "concurrency"), [(0, 4), (1, 1), (100, 4), (101, 4), (103, 64), (1000, 8), (10000, 8), (12345, 3)])
def test_plan_covers_every_document_once(total: int, concurrency: int) -> None:
    shards = plan_shards(total, concurrency)
    assert sorted(i for shard in shards for i in shard) == list(range(total))
    if total > PER_DOCUMENT_LIMIT:
        assert len(shards) == min(concurrency, total)  # one task run per slot
        sizes = [len(shard) for shard in shards]
        assert max(sizes) - min(sizes) <= 1
        # Dealt in turn: the first document of every shard comes before the second of any.
        assert sorted(shard[0] for shard in shards) == list(range(len(shards)))
        assert all(list(shard) == sorted(shard) for shard in shards)


def test_small_batches_get_one_task_run_per_document() -> None:
    assert plan_shards(PER_DOCUMENT_LIMIT, 8) == [range(i, i + 1) for i in range(PER_DOCUMENT_LIMIT)]


def refs(count: int) -> list[DocumentRef]:
    return [DocumentRef(index=i, uri=f"file:///d/{i}", name=f"{i}.txt", size=1, fingerprint=str(i)) for i in range(count)]


def test_an_idle_shard_takes_the_last_documents_of_the_busiest() -> None:
    documents = refs(10)
    work = SharedWork([documents[0:2], documents[2:9], documents[9:10]])
    assert [work.take(0).index, work.take(0).index] == [0, 1]
    assert work.take(0, steal=False) is None
    # Shard 0 is out of documents: it takes shard 1's last ones, shard 1 keeps its first.
    assert [work.take(0).index, work.take(0).index] == [8, 7]
    assert work.take(1).index == 2
    assert work.stolen == 2
    assert work.holders([7, 2, 5, 9]) == {7: 0, 2: 1, 5: 1, 9: 2}


def test_threads_sharing_work_extract_each_document_exactly_once_and_end_together() -> None:
    documents = refs(400)
    shards = [[documents[i] for i in shard] for shard in plan_shards(400, 4)]
    work = SharedWork(shards)
    done: dict[int, list[int]] = {n: [] for n in range(4)}
    ended: dict[int, float] = {}

    def run(shard: int) -> None:
        while (ref := work.take(shard)) is not None:
            time.sleep(0.005 if shard == 0 else 0.001)  # shard 0's documents are five times slower
            done[shard].append(ref.index)
        ended[shard] = time.perf_counter()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(i for indices in done.values() for i in indices) == list(range(400))
    assert work.stolen > 0 and len(done[0]) < len(shards[0])  # the others took over shard 0's tail
    # Without stealing shard 0 would end about 0.4 s after the others.
    assert max(ended.values()) - min(ended.values()) < 0.2


def test_a_shard_fed_by_a_running_listing_waits_for_its_next_document_instead_of_stealing() -> None:
    documents = refs(12)
    feed = ListingFeed()
    work = SharedWork([[], [], []], feed)
    for ref in documents[:6]:
        feed.put(ref)  # dealt in turn: shard 1 gets documents 1 and 4
    assert [work.take(1).index, work.take(1).index] == [1, 4]

    taken: list[int] = []
    waiting = threading.Thread(target=lambda: taken.append(work.take(1).index))
    waiting.start()
    waiting.join(timeout=0.2)
    # Shards 0 and 2 still hold documents, but the listing goes on: shard 1 waits for its own.
    assert waiting.is_alive() and not taken
    feed.put(documents[6])  # shard 0's
    waiting.join(timeout=0.2)
    assert waiting.is_alive()
    feed.put(documents[7])  # shard 1's
    waiting.join(timeout=5)
    assert taken == [7] and work.stolen == 0

    feed.close()  # the listing has ended: an empty shard now takes the busiest one's last
    assert work.take(1).index == 6 and work.stolen == 1
    assert work.take(1, steal=False) is None
    assert work.stolen_by == [0, 1, 0]  # shard 1 took shard 0's document 6
    assert work.holders([0, 3, 5]) == {0: 0, 3: 0, 5: 2}


def test_threads_fed_by_a_slow_listing_take_every_document_once_in_dealt_order() -> None:
    documents = refs(300)
    feed = ListingFeed()
    work = SharedWork([[] for _ in range(3)], feed)
    done: dict[int, list[int]] = {n: [] for n in range(3)}

    def run(shard: int) -> None:
        while (ref := work.take(shard)) is not None:
            done[shard].append(ref.index)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for ref in documents:
        feed.put(ref)
        time.sleep(0.0002)
    time.sleep(0.1)  # every shard has caught up with the listing
    assert all(thread.is_alive() for thread in threads)  # waiting for more, not ended
    feed.close()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads)
    assert done == {n: list(range(n, 300, 3)) for n in range(3)}
    assert work.stolen == 0
