"""A bounded buffer of small records written to the database in batches by one task.

Used for the quarantine and for device status. Records wait in memory while the database is
down (the `DbSession` retries); each record's `on_commit` callbacks run after the transaction
holding it commits (the MQTT collector acknowledges there). `put` waits while the buffer is
full (push back); `put_nowait` is for callers that must not wait: it refuses a record when full
and reports it as dropped, so a loss is always visible.

With `key_of` and `rejoins`, a record that `rejoins` (a message the broker redelivered after a
reconnect) and equals one still waiting, or one committed recently, is not written again: its
callback joins the waiting record, or runs at once. A message redelivered while the database is
down is then recorded once, while the same payload sent twice by a device is recorded twice.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import asyncpg

from ingest.dbsession import DbSession

R = TypeVar("R")
OnCommit = Callable[[], None]
WriteRecords = Callable[[asyncpg.Connection, Sequence[R]], Awaitable[None]]


RECENT_KEYS = 10_000  # committed keys remembered for redeliveries


class WriterClosed(Exception):
    pass


@dataclass(slots=True)
class _Entry(Generic[R]):
    record: R
    key: Hashable | None
    size: int
    callbacks: list[OnCommit] = field(default_factory=list)


class RecordWriter(Generic[R]):
    def __init__(
        self,
        session: DbSession,
        write: WriteRecords[R],
        *,
        name: str,
        capacity: int,
        max_batch: int = 1_000,
        size_of: Callable[[R], int] = lambda _r: 1,
        capacity_size: int | None = None,
        key_of: Callable[[R], Hashable] | None = None,
        rejoins: Callable[[R], bool] = lambda _r: False,
        on_new: Callable[[R], None] | None = None,
        on_drop: Callable[[R], None] | None = None,
    ) -> None:
        self._session = session
        self._write = write
        self.name = name
        self.capacity = capacity
        self._capacity_size = capacity_size
        self._size_of = size_of
        self._max_batch = max_batch
        self._key_of = key_of
        self._rejoins = rejoins
        self._on_new = on_new
        self._on_drop = on_drop
        self._pending: deque[_Entry[R]] = deque()
        self._by_key: dict[Hashable, _Entry[R]] = {}
        self._recent: OrderedDict[Hashable, None] = OrderedDict()  # keys committed lately
        self._size = 0
        self._closed = False
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def depth(self) -> int:
        return len(self._pending)

    def offer(self, record: R, on_commit: OnCommit | None = None) -> bool:
        """Queue a record if there is room now; False (nothing queued) if `put` would wait."""
        self._check_open()
        if self._join(record, on_commit):
            return True
        if not self._fits(record):
            return False
        self._append(record, on_commit)
        return True

    def put_nowait(self, record: R, on_commit: OnCommit | None = None) -> bool:
        """Queue a record if there is room; otherwise drop it, report it, and return False."""
        if self.offer(record, on_commit):
            return True
        if self._on_drop is not None:
            self._on_drop(record)
        return False

    async def put(self, record: R, on_commit: OnCommit | None = None) -> None:
        """Queue a record, waiting while the buffer is full."""
        while not self.offer(record, on_commit):
            self._room.clear()
            await self._room.wait()

    async def run(self) -> None:
        """Write records until closed and drained."""
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
                continue
            chunk = [self._pending[i] for i in range(min(self._max_batch, len(self._pending)))]
            await self._session.transact(self._writing([entry.record for entry in chunk]))
            for _ in chunk:
                entry = self._pending.popleft()
                self._size -= entry.size
                if entry.key is not None:
                    if self._by_key.get(entry.key) is entry:
                        del self._by_key[entry.key]
                    self._remember(entry.key)
            self._room.set()
            for entry in chunk:
                for callback in entry.callbacks:
                    callback()

    def close(self) -> None:
        """Refuse new records; `run` returns once the buffered ones are written."""
        self._closed = True
        self._ready.set()
        self._room.set()

    def _writing(self, records: list[R]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def work(conn: asyncpg.Connection) -> None:
            await self._write(conn, records)

        return work

    def _check_open(self) -> None:
        if self._closed:
            raise WriterClosed(f"{self.name} is closed")

    def _join(self, record: R, on_commit: OnCommit | None) -> bool:
        if self._key_of is None or not self._rejoins(record):
            return False
        key = self._key_of(record)
        entry = self._by_key.get(key)
        if entry is not None:
            if on_commit is not None:
                entry.callbacks.append(on_commit)
            return True
        if key in self._recent:
            if on_commit is not None:
                asyncio.get_running_loop().call_soon(on_commit)  # never inside the caller
            return True
        return False

    def _remember(self, key: Hashable) -> None:
        self._recent[key] = None
        if len(self._recent) > RECENT_KEYS:
            self._recent.popitem(last=False)

    def _fits(self, record: R) -> bool:
        if not self._pending:
            return True
        if len(self._pending) >= self.capacity:
            return False
        return self._capacity_size is None or (
            self._size + self._size_of(record) <= self._capacity_size
        )

    def _append(self, record: R, on_commit: OnCommit | None) -> None:
        key = None if self._key_of is None else self._key_of(record)
        entry = _Entry(record, key, self._size_of(record), [] if on_commit is None else [on_commit])
        self._pending.append(entry)
        if key is not None:
            self._by_key[key] = entry
        self._size += entry.size
        if self._on_new is not None:
            self._on_new(record)
        self._ready.set()
