"""A bounded buffer of small records written to the database in batches by one task.

Used for the quarantine and for device status. Records wait in memory while the database is
down (the `DbSession` retries); each record's `on_commit` runs after the transaction holding
it commits (the MQTT collector acknowledges there). `put` waits while the buffer is full (push
back); `put_nowait` is for callers that must not wait: it refuses a record when full and counts
it as dropped, so a loss is always visible.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg

from ingest.dbsession import DbSession

log = logging.getLogger(__name__)

R = TypeVar("R")
OnCommit = Callable[[], None]
WriteRecords = Callable[[asyncpg.Connection, Sequence[R]], Awaitable[None]]


class WriterClosed(Exception):
    pass


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
        on_drop: Callable[[R], None] | None = None,
    ) -> None:
        self._session = session
        self._write = write
        self.name = name
        self.capacity = capacity
        self._capacity_size = capacity_size
        self._size_of = size_of
        self._max_batch = max_batch
        self._on_drop = on_drop
        self._pending: deque[tuple[R, OnCommit | None]] = deque()
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
        if self._closed:
            raise WriterClosed(f"{self.name} is closed")
        if not self._fits(record):
            return False
        self._append(record, on_commit)
        return True

    def put_nowait(self, record: R, on_commit: OnCommit | None = None) -> bool:
        """Queue a record if there is room; otherwise drop it, count it, and return False."""
        if self._closed:
            raise WriterClosed(f"{self.name} is closed")
        if not self._fits(record):
            if self._on_drop is not None:
                self._on_drop(record)
            return False
        self._append(record, on_commit)
        return True

    async def put(self, record: R, on_commit: OnCommit | None = None) -> None:
        """Queue a record, waiting while the buffer is full."""
        while True:
            if self._closed:
                raise WriterClosed(f"{self.name} is closed")
            if self._fits(record):
                self._append(record, on_commit)
                return
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
            await self._session.transact(self._writing([record for record, _ in chunk]))
            for _ in chunk:
                record, _cb = self._pending.popleft()
                self._size -= self._size_of(record)
            self._room.set()
            for _record, on_commit in chunk:
                if on_commit is not None:
                    on_commit()

    def _writing(self, records: list[R]) -> Callable[[asyncpg.Connection], Awaitable[None]]:
        async def work(conn: asyncpg.Connection) -> None:
            await self._write(conn, records)

        return work

    def close(self) -> None:
        """Refuse new records; `run` returns once the buffered ones are written."""
        self._closed = True
        self._ready.set()
        self._room.set()

    def _fits(self, record: R) -> bool:
        if not self._pending:
            return True
        if len(self._pending) >= self.capacity:
            return False
        return self._capacity_size is None or (
            self._size + self._size_of(record) <= self._capacity_size
        )

    def _append(self, record: R, on_commit: OnCommit | None) -> None:
        self._pending.append((record, on_commit))
        self._size += self._size_of(record)
        self._ready.set()
