"""Collect readings from the collectors into batches for the store: bounded, never dropping.

Collectors `put` column batches (a poll result, a burst of MQTT messages) with an optional
`on_commit` callback; the store `get`s a `Flush` once `max_rows` readings are waiting or the
oldest has waited `max_age_ms`, writes it, and runs the flush's callbacks after the commit (the
MQTT collector acknowledges its messages there). When `capacity_rows` readings are waiting, `put`
waits: the collector stops reading and its source (the broker, the device) keeps the data.

A flush holds whole batches as they were put, in order, so a callback always runs after every
reading it stands for is committed: it stops short of `max_rows` rather than split a batch, and
a single batch larger than `max_rows` is a flush of its own. Batches much smaller than
`max_rows` therefore make the fullest flushes (the MQTT collector puts at most an eighth).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hazwatch.domain import ReadingBatch

OnCommit = Callable[[], None]


class BatcherClosed(Exception):
    """The batcher is closed: no more puts, and `get` has nothing left to return."""


@dataclass(frozen=True, slots=True)
class Flush:
    batch: ReadingBatch
    on_commit: list[OnCommit] = field(default_factory=list)

    def committed(self) -> None:
        """Run the callbacks, in the order their batches were put."""
        for callback in self.on_commit:
            callback()


@dataclass(frozen=True, slots=True)
class _Piece:
    batch: ReadingBatch
    on_commit: OnCommit | None
    put_at: float


class Batcher:
    def __init__(
        self,
        *,
        max_rows: int = 20_000,
        max_age_ms: int = 100,
        capacity_rows: int = 500_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < max_rows <= capacity_rows:
            raise ValueError("need 0 < max_rows <= capacity_rows")
        self.max_rows = max_rows
        self.max_age_s = max_age_ms / 1000
        self.capacity_rows = capacity_rows
        self._clock = clock
        self._pieces: deque[_Piece] = deque()
        self._rows = 0
        self._closed = False
        self._ready = asyncio.Event()  # set when a get() may have something to do
        self._room = asyncio.Event()  # set when a put() may have room
        self._room.set()

    @property
    def depth_rows(self) -> int:
        """Readings waiting to be flushed."""
        return self._rows

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, batch: ReadingBatch, on_commit: OnCommit | None = None) -> bool:
        """Add a batch if there is room now; False (and nothing added) if `put` would wait."""
        if self._closed:
            raise BatcherClosed("batcher is closed")
        if not self._fits(len(batch)):
            return False
        self._append(batch, on_commit)
        return True

    async def put(self, batch: ReadingBatch, on_commit: OnCommit | None = None) -> None:
        """Add a batch, waiting while the batcher is full (push back; nothing is dropped)."""
        while True:
            if self._closed:
                raise BatcherClosed("batcher is closed")
            if self._fits(len(batch)):
                self._append(batch, on_commit)
                return
            self._room.clear()
            await self._room.wait()

    async def get(self) -> Flush:
        """The next flush: at `max_rows`, at `max_age_ms`, or whatever is left once closed."""
        while True:
            if self._pieces:
                if self._closed or self._rows >= self.max_rows:
                    return self._take()
                wait_s = self._pieces[0].put_at + self.max_age_s - self._clock()
                if wait_s <= 0:
                    return self._take()
            elif self._closed:
                raise BatcherClosed("batcher is closed and drained")
            else:
                wait_s = None
            self._ready.clear()
            try:
                async with asyncio.timeout(wait_s):
                    await self._ready.wait()
            except TimeoutError:
                pass

    def close(self) -> None:
        """Refuse further puts; `get` returns what is left, then raises BatcherClosed."""
        self._closed = True
        self._ready.set()
        self._room.set()

    def _fits(self, rows: int) -> bool:
        # An empty batcher takes a batch of any size, so no put can wait forever.
        return self._rows == 0 or self._rows + rows <= self.capacity_rows

    def _append(self, batch: ReadingBatch, on_commit: OnCommit | None) -> None:
        if len(batch) == 0 and on_commit is None:
            return
        was_empty = not self._pieces
        self._pieces.append(_Piece(batch, on_commit, self._clock()))
        self._rows += len(batch)
        if was_empty or self._rows >= self.max_rows:
            self._ready.set()

    def _take(self) -> Flush:
        batches: list[ReadingBatch] = []
        callbacks: list[OnCommit] = []
        rows = 0
        while self._pieces and (not batches or rows + len(self._pieces[0].batch) <= self.max_rows):
            piece = self._pieces.popleft()
            batches.append(piece.batch)
            rows += len(piece.batch)
            if piece.on_commit is not None:
                callbacks.append(piece.on_commit)
        self._rows -= rows
        self._room.set()
        if self._pieces:
            self._ready.set()
        batch = batches[0] if len(batches) == 1 else ReadingBatch.concat(batches)
        return Flush(batch=batch, on_commit=callbacks)
