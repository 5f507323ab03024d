"""A connection of its own that LISTENs on one channel and is reopened when lost.

Used by ingest (registry changes: accept a new device at once) and by the alarm bridge (rule
changes: reload the rules). Neither may stop because it cannot listen: while the database
cannot be reached, `ensure` logs and returns, and the caller's periodic fallback remains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import asyncpg

from hazwatch.config import DatabaseSettings
from hazwatch.db import UNAVAILABLE_ERRORS, connect
from hazwatch.errors import DatabaseUnavailable

log = logging.getLogger(__name__)


class ChannelListener:
    def __init__(
        self, database: DatabaseSettings, channel: str, on_notify: Callable[[], None]
    ) -> None:
        self._database = database
        self._channel = channel
        self._on_notify = on_notify
        self._conn: asyncpg.Connection | None = None

    async def ensure(self) -> bool:
        """Open the connection unless it is open; True if it was opened now, when a notice
        may have been missed while there was none."""
        if self._conn is not None and not self._conn.is_closed():
            return False
        self._conn = None
        try:
            conn = await connect(self._database)
        except DatabaseUnavailable as exc:
            log.warning("cannot listen on %s (retrying later): %s", self._channel, str(exc))
            return False
        try:
            await conn.add_listener(self._channel, lambda *_: self._on_notify())
        except BaseException as exc:
            conn.terminate()
            if not isinstance(exc, UNAVAILABLE_ERRORS):
                raise
            log.warning("cannot listen on %s (retrying later): %s", self._channel, str(exc))
            return False
        self._conn = conn
        return True

    async def aclose(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=5)
            except UNAVAILABLE_ERRORS:
                conn.terminate()
