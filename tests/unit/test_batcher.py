"""Batcher: flush on size and age, whole batches in order, push back when full, drain on close."""

from __future__ import annotations

import asyncio

import pytest

from hazwatch.domain import ReadingBatch
from ingest.batcher import Batcher, BatcherClosed


def rows(n: int, start: int = 0) -> ReadingBatch:
    return ReadingBatch.from_columns([1] * n, list(range(start, start + n)), [0.0] * n, [0] * n)


async def test_flushes_at_max_rows_with_whole_batches_in_order() -> None:
    b = Batcher(max_rows=10, max_age_ms=60_000, capacity_rows=100)
    done: list[int] = []
    for i in range(4):
        await b.put(rows(4, 4 * i), lambda i=i: done.append(i))
    flush = await asyncio.wait_for(b.get(), 1)
    # 4 + 4 fit under 10; the third batch would exceed it and waits for the next flush.
    assert flush.batch.ts_us.tolist() == list(range(8))
    flush.committed()
    assert done == [0, 1]
    assert b.depth_rows == 8


async def test_flushes_at_max_age() -> None:
    now = [0.0]
    b = Batcher(max_rows=1000, max_age_ms=20, capacity_rows=1000, clock=lambda: now[0])
    await b.put(rows(3))
    getter = asyncio.create_task(b.get())
    await asyncio.sleep(0)
    assert not getter.done()
    now[0] = 0.021  # the oldest reading is now older than max_age
    flush = await asyncio.wait_for(getter, 1)
    assert len(flush.batch) == 3


async def test_a_full_batcher_pushes_back_until_a_flush() -> None:
    b = Batcher(max_rows=5, max_age_ms=60_000, capacity_rows=10)
    await b.put(rows(5))
    await b.put(rows(5, 5))
    assert not b.offer(rows(1, 10))
    blocked = asyncio.create_task(b.put(rows(1, 10)))
    await asyncio.sleep(0.01)
    assert not blocked.done()  # waiting, not dropped
    assert b.depth_rows == 10
    await b.get()
    await asyncio.wait_for(blocked, 1)
    assert b.depth_rows == 6


async def test_a_batch_larger_than_capacity_is_taken_when_empty() -> None:
    b = Batcher(max_rows=5, max_age_ms=60_000, capacity_rows=10)
    await asyncio.wait_for(b.put(rows(25)), 1)
    flush = await b.get()
    assert len(flush.batch) == 25


async def test_close_drains_then_raises() -> None:
    b = Batcher(max_rows=100, max_age_ms=60_000, capacity_rows=1000)
    await b.put(rows(3))
    b.close()
    assert len((await b.get()).batch) == 3
    with pytest.raises(BatcherClosed):
        await b.get()
    with pytest.raises(BatcherClosed):
        await b.put(rows(1))


async def test_close_wakes_a_waiting_getter() -> None:
    b = Batcher(max_rows=100, max_age_ms=60_000, capacity_rows=1000)
    getter = asyncio.create_task(b.get())
    await asyncio.sleep(0)
    b.close()
    with pytest.raises(BatcherClosed):
        await asyncio.wait_for(getter, 1)
