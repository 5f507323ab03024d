"""Retention: raw readings and the one-minute rollup are kept for separate lengths of time.

The Apache build of TimescaleDB has no retention policies, so HazWatch applies `drop_chunks`
itself: `hazwatch db retention` runs it once, and the ingest service runs it periodically.
Whole chunks are dropped, so data lives up to one chunk interval longer than the setting.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import asyncpg

from hazwatch.config import IngestSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetentionResult:
    readings_chunks: int
    rollup_chunks: int


async def apply_retention(
    conn: asyncpg.Connection, settings: IngestSettings, *, now: dt.datetime
) -> RetentionResult:
    """Drop the chunks of `readings` and `readings_1m` that end before their retention."""
    raw_cutoff = now - dt.timedelta(days=settings.raw_retention_days)
    rollup_cutoff = now - dt.timedelta(days=settings.rollup_retention_days)
    drop = "SELECT drop_chunks($1::regclass, older_than => $2::timestamptz)"
    raw = await conn.fetch(drop, "readings", raw_cutoff)
    rollup = await conn.fetch(drop, "readings_1m", rollup_cutoff)
    if raw or rollup:
        log.info(
            "retention dropped %d raw chunk(s) before %s and %d rollup chunk(s) before %s",
            len(raw), raw_cutoff.isoformat(), len(rollup), rollup_cutoff.isoformat(),
        )  # fmt: skip
    return RetentionResult(readings_chunks=len(raw), rollup_chunks=len(rollup))
