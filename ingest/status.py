"""Device status from the MQTT status topic (`online` / `offline`, retained, last will).

Updates wait in a bounded buffer while the database is down and are acknowledged to the broker
after they commit, like readings. An update never moves `status_at` backwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingest.dbsession import DbSession
from ingest.metrics import IngestMetrics
from ingest.writer import OnCommit, RecordWriter


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device_key: str
    status: str  # online / offline
    at: datetime


async def _write(conn: asyncpg.Connection, updates: Sequence[DeviceStatus]) -> None:
    await conn.executemany(
        """UPDATE devices SET status = $2, status_at = $3
           WHERE key = $1 AND (status_at IS NULL OR status_at <= $3)""",
        [(u.device_key, u.status, u.at) for u in updates],
    )


class StatusWriter:
    def __init__(
        self, session: DbSession, metrics: IngestMetrics, *, capacity: int = 10_000
    ) -> None:
        self._writer: RecordWriter[DeviceStatus] = RecordWriter(
            session,
            _write,
            name="device-status",
            capacity=capacity,
            on_new=lambda u: metrics.device_status.labels(u.status).inc(),
        )

    @property
    def depth(self) -> int:
        return self._writer.depth

    def offer(self, update: DeviceStatus, on_commit: OnCommit | None = None) -> bool:
        return self._writer.offer(update, on_commit)

    async def put(self, update: DeviceStatus, on_commit: OnCommit | None = None) -> None:
        await self._writer.put(update, on_commit)

    async def run(self) -> None:
        await self._writer.run()

    def close(self) -> None:
        self._writer.close()
