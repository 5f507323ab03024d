"""The live stream's hub: one LISTEN connection per app, fanned out to WebSocket clients.

- Alarm events: the hub LISTENs on `hazwatch_alarm_events` and offers each notification to
  every subscriber whose sites include the event's site, as
  `{"type": "alarm_event", "event": {...}}`.
- Latest values: every `latest_interval_s` (only while someone listens) the hub reads the
  sensors whose `latest` row changed since its last push and sends
  `{"type": "latest", "values": [...]}`, filtered by site the same way.
- When the LISTEN connection is lost and comes back, subscribers get `{"type": "resync"}`:
  events in between were not seen, and a console should reload its alarm list.

Each subscriber has a bounded queue. Offering never waits: a subscriber whose queue is full is
marked closed with the reason "slow consumer" and its endpoint disconnects it, so one slow
client can never hold up the others or the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from alerting.store import CHANNEL
from api.metrics import ApiMetrics
from api.schemas import finite
from hazwatch.config import DatabaseSettings
from hazwatch.db import UNAVAILABLE_ERRORS, connect
from hazwatch.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

SLOW_CONSUMER = "slow consumer"
_LISTEN_ERRORS: tuple[type[BaseException], ...] = (DatabaseUnavailable, *UNAVAILABLE_ERRORS)
LISTEN_PING_S = 10.0
RECONNECT_MAX_S = 10.0
LATEST_LOOKBACK = timedelta(minutes=5)

_LATEST_SQL = """
SELECT l.sensor_id, n.key AS sensor, s.key AS site, l.ts, l.value, l.quality
FROM latest l
JOIN sensors n USING (sensor_id)
JOIN assets a ON a.asset_id = n.asset_id
JOIN sites s ON s.site_id = a.site_id
WHERE l.ts > $1
"""


@dataclass(eq=False)
class Subscriber:
    """One connected client: what it wants, its queue, and why it was closed (if it was)."""

    sites: frozenset[str] | None  # None: every site
    want_latest: bool
    queue: asyncio.Queue[dict[str, Any]]
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None

    def wants(self, site: str | None) -> bool:
        return self.sites is None or (site is not None and site in self.sites)

    def offer(self, message: dict[str, Any]) -> bool:
        """Queue a message without waiting; a full queue closes the subscriber."""
        if self.closed.is_set():
            return False
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.close(SLOW_CONSUMER)
            return False
        return True

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()


class StreamHub:
    def __init__(
        self,
        *,
        database: DatabaseSettings,
        pool: asyncpg.Pool,
        metrics: ApiMetrics,
        queue_max: int,
        latest_interval_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._database = database
        self._pool = pool
        self._metrics = metrics
        self._queue_max = queue_max
        self._latest_interval_s = latest_interval_s
        self._clock = clock
        self._subscribers: set[Subscriber] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._sent_latest: dict[int, datetime] = {}
        self.listening = asyncio.Event()

    async def __aenter__(self) -> StreamHub:
        self._tasks = [
            asyncio.create_task(self._listen_forever(), name="stream-listen"),
            asyncio.create_task(self._latest_forever(), name="stream-latest"),
        ]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for sub in list(self._subscribers):
            sub.close("server shutting down")

    @contextlib.contextmanager
    def subscribe(self, *, sites: frozenset[str] | None, want_latest: bool) -> Iterator[Subscriber]:
        sub = Subscriber(sites=sites, want_latest=want_latest, queue=asyncio.Queue(self._queue_max))
        self._subscribers.add(sub)
        self._metrics.stream_clients.set(len(self._subscribers))
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)
            self._metrics.stream_clients.set(len(self._subscribers))
            if sub.reason is not None:
                self._metrics.stream_disconnects.labels(sub.reason).inc()

    def broadcast(self, message: dict[str, Any], site: str | None) -> None:
        for sub in list(self._subscribers):
            if sub.wants(site):
                sub.offer(message)

    # LISTEN ------------------------------------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            log.warning("ignored a notification that is not JSON: %.200s", payload)
            return
        if not isinstance(event, dict):
            log.warning("ignored a notification that is not an object: %.200s", payload)
            return
        self.broadcast({"type": "alarm_event", "event": event}, event.get("site"))

    async def _connect(self) -> asyncpg.Connection:
        """Connect; a shutdown that cancels us mid-handshake lets the handshake finish and
        closes the connection, rather than leaving asyncpg a half-open socket to complain of."""
        connecting = asyncio.ensure_future(connect(self._database))
        try:
            return await asyncio.shield(connecting)
        except asyncio.CancelledError:
            with contextlib.suppress(*_LISTEN_ERRORS):
                conn = await connecting
                await conn.close(timeout=2.0)
            raise

    @contextlib.asynccontextmanager
    async def _listening(self) -> AsyncIterator[asyncpg.Connection]:
        conn = await self._connect()
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
            yield conn
        finally:
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await asyncio.wait_for(conn.close(), timeout=2.0)
            conn.terminate()

    async def _listen_forever(self) -> None:
        delay = 0.5
        lost_before = False
        while True:
            try:
                async with self._listening() as conn:
                    lost = asyncio.Event()
                    conn.add_termination_listener(functools.partial(_set_event, lost))
                    self.listening.set()
                    self._metrics.stream_listen_up.set(1)
                    if lost_before:
                        self.broadcast({"type": "resync", "reason": "stream reconnected"}, None)
                    delay = 0.5
                    while not lost.is_set():
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(lost.wait(), timeout=LISTEN_PING_S)
                        if not lost.is_set():
                            await conn.fetchval("SELECT 1")  # a hung server shows up here
            except _LISTEN_ERRORS as exc:
                log.warning("live stream: LISTEN connection lost (%s); retrying in %.1f s",
                            exc, delay)  # fmt: skip
            self.listening.clear()
            self._metrics.stream_listen_up.set(0)
            lost_before = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    # Latest values -----------------------------------------------------------------------------

    async def push_latest(self) -> int:
        """Send the latest values that changed since the last push; returns how many."""
        if not any(s.want_latest for s in self._subscribers):
            return 0
        since = self._clock() - LATEST_LOOKBACK
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_LATEST_SQL, since)
        changed = [r for r in rows if self._sent_latest.get(r["sensor_id"]) != r["ts"]]
        for r in changed:
            self._sent_latest[r["sensor_id"]] = r["ts"]
        if not changed:
            return 0
        values = [
            {
                "sensor_id": r["sensor_id"],
                "sensor": r["sensor"],
                "site": r["site"],
                "ts": r["ts"].isoformat(),
                "value": finite(r["value"]),
                "quality": r["quality"],
            }
            for r in changed
        ]
        for sub in list(self._subscribers):
            if sub.want_latest:
                mine = [v for v in values if sub.wants(v["site"])]
                if mine:
                    sub.offer({"type": "latest", "values": mine})
        return len(changed)

    async def _latest_forever(self) -> None:
        while True:
            try:
                await self.push_latest()
            except UNAVAILABLE_ERRORS as exc:
                log.debug("live stream: latest values not read (%s)", exc)
            await asyncio.sleep(self._latest_interval_s)


def _set_event(event: asyncio.Event, _conn: object) -> None:
    event.set()
