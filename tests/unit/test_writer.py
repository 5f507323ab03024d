"""RecordWriter: bounded, pushes back, counts drops, records a redelivery once; Backoff bounds."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest

from ingest.dbsession import Backoff
from ingest.writer import RecordWriter, WriterClosed


@dataclass(frozen=True)
class Rec:
    key: str
    redelivered: bool = False


class FakeSession:
    """Stands in for DbSession: runs the work, with a gate the test opens (a database outage)."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.open.set()
        self.transactions = 0

    async def transact(self, work: Callable[[object], Awaitable[None]]) -> None:
        await self.open.wait()
        self.transactions += 1
        await work(None)


def make(capacity: int = 3) -> tuple[RecordWriter[Rec], FakeSession, list[Rec], list[Rec]]:
    session = FakeSession()
    written: list[Rec] = []
    dropped: list[Rec] = []

    async def write(_conn: object, records: Sequence[Rec]) -> None:
        written.extend(records)

    writer = RecordWriter(
        session,  # type: ignore[arg-type]
        write,
        name="test",
        capacity=capacity,
        key_of=lambda r: r.key,
        rejoins=lambda r: r.redelivered,
        on_drop=dropped.append,
    )
    return writer, session, written, dropped


async def test_callbacks_run_after_the_write() -> None:
    writer, session, written, _ = make()
    session.open.clear()  # the database is down
    done: list[str] = []
    run = asyncio.create_task(writer.run())
    await writer.put(Rec("a"), lambda: done.append("a"))
    await asyncio.sleep(0.01)
    assert done == []
    assert writer.depth == 1
    session.open.set()
    writer.close()
    await asyncio.wait_for(run, 1)
    assert done == ["a"]
    assert written == [Rec("a")]


async def test_full_buffer_pushes_back_or_counts_the_drop() -> None:
    writer, session, written, dropped = make(capacity=2)
    session.open.clear()
    run = asyncio.create_task(writer.run())
    assert writer.offer(Rec("a"))
    assert writer.offer(Rec("b"))
    assert not writer.offer(Rec("c"))  # refused, nothing queued, not counted as dropped
    assert not writer.put_nowait(Rec("d"))  # dropped, and reported
    assert dropped == [Rec("d")]
    waiting = asyncio.create_task(writer.put(Rec("e")))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    session.open.set()
    await asyncio.wait_for(waiting, 1)
    writer.close()
    await asyncio.wait_for(run, 1)
    assert written == [Rec("a"), Rec("b"), Rec("e")]
    with pytest.raises(WriterClosed):
        writer.offer(Rec("f"))


async def test_a_redelivery_is_recorded_once_but_a_resend_twice() -> None:
    writer, session, written, _ = make(capacity=10)
    session.open.clear()
    run = asyncio.create_task(writer.run())
    acks: list[str] = []
    await writer.put(Rec("x"), lambda: acks.append("first"))
    await writer.put(Rec("x", redelivered=True), lambda: acks.append("redelivered"))
    await writer.put(Rec("x"), lambda: acks.append("sent again by the device"))
    session.open.set()
    await asyncio.sleep(0.01)
    # Redelivered after the record was committed: still not written twice, acknowledged soon.
    await writer.put(Rec("x", redelivered=True), lambda: acks.append("late redelivery"))
    await asyncio.sleep(0.01)
    writer.close()
    await asyncio.wait_for(run, 1)
    assert written == [Rec("x"), Rec("x")]
    assert sorted(acks) == sorted(
        ["first", "redelivered", "sent again by the device", "late redelivery"]
    )


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(min_s=0.5, max_s=10.0)
    rng = random.Random(1)
    delays = [backoff.delay_s(attempt, rng) for attempt in range(40)]
    assert 0.25 <= delays[0] <= 0.5
    assert all(0 < d <= 10.0 for d in delays)
    assert max(delays[10:]) > 5.0
    assert len(set(delays[10:])) > 1  # jitter: not all the same
