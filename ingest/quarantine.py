"""The quarantine: every payload or reading ingest refused, kept with its reason, never lost.

`QuarantineSink.put(source, topic, reason, detail, payload)` queues a record; one writer task
COPYs them into the `quarantine` table. Records survive a database outage in a bounded buffer
(count and bytes); `put` waits when it is full, `put_nowait` drops and counts
(`hazwatch_ingest_quarantine_dropped_total`). Reasons are short codes (ingest.decode.Reason).

A message the broker redelivers (its DUP flag) is recorded once if its first copy's record is
still waiting or was committed lately by this process; only a crash between a commit and the
acknowledgement makes a second record, so quarantine is at-least-once, like readings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from ingest.dbsession import DbSession
from ingest.metrics import IngestMetrics
from ingest.writer import OnCommit, RecordWriter

# Kept of a payload refused for its size: enough to recognise the sender.
TRUNCATED_PAYLOAD_BYTES = 4096
MAX_DETAIL_CHARS = 2000


@dataclass(frozen=True, slots=True)
class QuarantineRecord:
    received_at: datetime
    source: str
    topic: str | None
    reason: str
    detail: str | None
    payload: bytes | None
    redelivered: bool = False  # the broker's DUP flag; not stored


def new_record(
    source: str,
    topic: str | None,
    reason: str,
    detail: str | None,
    payload: bytes | bytearray | None,
    *,
    redelivered: bool = False,
    now_s: float,
) -> QuarantineRecord:
    """A quarantine record, its payload and detail cut to what is kept."""
    if payload is not None and len(payload) > TRUNCATED_PAYLOAD_BYTES and reason == "too_large":
        payload = payload[:TRUNCATED_PAYLOAD_BYTES]
    if detail is not None and len(detail) > MAX_DETAIL_CHARS:
        detail = detail[:MAX_DETAIL_CHARS]
    return QuarantineRecord(
        received_at=datetime.fromtimestamp(now_s, UTC),
        source=source,
        topic=topic,
        reason=reason,
        detail=detail,
        payload=None if payload is None else bytes(payload),
        redelivered=redelivered,
    )


async def _write(conn: asyncpg.Connection, records: Sequence[QuarantineRecord]) -> None:
    await conn.copy_records_to_table(
        "quarantine",
        records=[
            (r.received_at, r.source, r.topic, r.reason, r.detail, r.payload) for r in records
        ],
        columns=("received_at", "source", "topic", "reason", "detail", "payload"),
    )


class QuarantineSink:
    def __init__(
        self,
        session: DbSession,
        metrics: IngestMetrics,
        *,
        max_records: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._clock = wall_clock
        self._writer: RecordWriter[QuarantineRecord] = RecordWriter(
            session,
            _write,
            name="quarantine",
            capacity=max_records,
            size_of=lambda r: len(r.payload or b"") + len(r.detail or "") + 200,
            capacity_size=max_bytes,
            # A redelivered message refused again while its record still waits is one record.
            key_of=lambda r: (r.source, r.topic, r.reason, r.payload),
            rejoins=lambda r: r.redelivered,
            on_new=lambda r: metrics.quarantined.labels(r.source, r.reason).inc(),
            on_drop=lambda _r: metrics.quarantine_dropped.inc(),
        )

    @property
    def depth(self) -> int:
        return self._writer.depth

    def record(
        self,
        source: str,
        topic: str | None,
        reason: str,
        detail: str | None,
        payload: bytes | bytearray | None,
        *,
        redelivered: bool = False,
    ) -> QuarantineRecord:
        return new_record(
            source, topic, reason, detail, payload, redelivered=redelivered, now_s=self._clock()
        )

    async def put(
        self,
        source: str,
        topic: str | None,
        reason: str,
        detail: str | None,
        payload: bytes | bytearray | None,
        *,
        on_commit: OnCommit | None = None,
    ) -> None:
        """Quarantine one refused payload; waits while the buffer is full."""
        await self._writer.put(self.record(source, topic, reason, detail, payload), on_commit)

    def put_nowait(
        self,
        source: str,
        topic: str | None,
        reason: str,
        detail: str | None,
        payload: bytes | bytearray | None,
        *,
        on_commit: OnCommit | None = None,
    ) -> bool:
        """Quarantine without waiting; when full the record is dropped and counted (False)."""
        return self._writer.put_nowait(
            self.record(source, topic, reason, detail, payload), on_commit
        )

    def offer(self, record: QuarantineRecord, on_commit: OnCommit | None = None) -> bool:
        """Queue a prepared record if there is room now (False: nothing queued, put() waits)."""
        return self._writer.offer(record, on_commit)

    async def put_record(self, record: QuarantineRecord, on_commit: OnCommit | None = None) -> None:
        await self._writer.put(record, on_commit)

    async def run(self) -> None:
        await self._writer.run()

    def close(self) -> None:
        self._writer.close()
