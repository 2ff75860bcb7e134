"""The batch's concurrency slots: a hard bound, documents served in input order, slots kept across a shard."""

from __future__ import annotations

import threading
import time

from tasks.slots import DocumentSlots, OrderedSlots


def test_a_freed_slot_goes_to_the_lowest_waiting_priority() -> None:
    slots = OrderedSlots(1)
    slots.acquire(0)
    served: list[int] = []

    def wait(priority: int) -> None:
        slots.acquire(priority)
        served.append(priority)
        slots.release()

    threads = [threading.Thread(target=wait, args=(p,)) for p in (30, 10, 20)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # all three queue up, in the order 30, 10, 20
    slots.release()
    for thread in threads:
        thread.join(timeout=5)
    assert served == [10, 20, 30]


def test_shards_keep_their_slot_unless_an_earlier_document_waits_and_never_exceed_the_bound() -> None:
    runtime = DocumentSlots(2)
    order: list[int] = []
    lock = threading.Lock()

    def shard(indices: range) -> None:
        with runtime.shard() as holder:
            for index in indices:
                with holder.document(index):
                    with lock:
                        order.append(index)
                    time.sleep(0.01)

    threads = [threading.Thread(target=shard, args=(range(start, start + 5),)) for start in (0, 5, 10, 15)]
    for thread in threads:
        thread.start()
        time.sleep(0.002)
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(order) == list(range(20))
    assert runtime.peak_in_flight == 2 and runtime.in_flight == 0
    # The first two shards ran to their end before the later ones got a slot.
    assert set(order[:10]) == set(range(10))
    assert runtime.slots.owes(0) is False and runtime.slots._free == 2
