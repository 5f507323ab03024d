"""One owned database connection that survives outages: transactions retried with backoff.

Each writer of the ingest process (readings, quarantine, device status) owns one `DbSession`.
`transact(work)` runs `work(conn)` inside a transaction; if the server is unreachable, restarts,
hangs past `command_timeout_s` or drops the connection, the connection is thrown away and the
whole transaction is tried again on a new one after a capped, jittered delay, for as long as it
takes. Nothing is acknowledged meanwhile, so the sources keep their data. Any other error is a
bug or bad data and is raised to the caller.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import asyncpg

from hazwatch.config import DatabaseSettings
from hazwatch.db import UNAVAILABLE_ERRORS, connect, redact
from hazwatch.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

# What means "try again on a new connection": the server is gone, restarting or too slow.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS,
    DatabaseUnavailable,
    asyncpg.exceptions.PostgresConnectionError,
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter in [delay/2, delay]."""

    min_s: float = 0.2
    max_s: float = 10.0

    def delay_s(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_s, self.min_s * float(2 ** min(attempt, 30)))
        return ceiling * rng.uniform(0.5, 1.0)


class DbSession:
    """A lazily (re)opened connection; `transact` retries whole transactions across outages."""

    def __init__(
        self,
        settings: DatabaseSettings,
        *,
        name: str,
        backoff: Backoff,
        on_connect: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._name = name
        self._backoff = backoff
        self._on_connect = on_connect
        self._on_error = on_error
        self._rng = rng or random.Random()  # noqa: S311 (jitter, not cryptography)
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._failing = False

    async def transact(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `work` in a transaction, retrying on a new connection until it commits."""
        async with self._lock:
            attempt = 0
            while True:
                try:
                    conn = await self._connection()
                    async with conn.transaction():
                        result = await work(conn)
                except RETRYABLE_ERRORS as exc:
                    await self._drop()
                    if self._on_error is not None:
                        self._on_error(exc)
                    delay = self._backoff.delay_s(attempt, self._rng)
                    if not self._failing:
                        log.warning(
                            "%s: database unavailable (%s: %s); retrying, nothing is acknowledged"
                            " until it is back",
                            self._name,
                            type(exc).__name__,
                            str(exc),
                        )
                        self._failing = True
                    else:
                        log.debug("%s: attempt %d failed: %s", self._name, attempt + 1, str(exc))
                    attempt += 1
                    await asyncio.sleep(delay)
                    continue
                if self._failing:
                    log.warning(
                        "%s: database is back after %d failed attempt(s)", self._name, attempt
                    )
                    self._failing = False
                return result

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                try:
                    await asyncio.wait_for(conn.close(), timeout=self._settings.command_timeout_s)
                except RETRYABLE_ERRORS:
                    conn.terminate()

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(self._settings)
            try:
                if self._on_connect is not None:
                    await self._on_connect(conn)
            except BaseException:
                conn.terminate()
                raise
            self._conn = conn
            log.debug("%s: connected to %s", self._name, redact(self._settings.url))
        return self._conn

    async def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()
