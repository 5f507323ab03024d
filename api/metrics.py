"""The API process's own Prometheus metrics, served at /metrics.

Request counts and latency by route template (not raw path, so ids do not explode the label
set), open alarms by state and tier (refreshed from the database every `metrics_refresh_s` by
the lifespan), live-stream clients and disconnects. The ingest process serves its own metrics
(ingest rates, batch latency, queue depth, quarantine) on its own port: see docs/api.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import asyncpg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hazwatch.db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

STATES = ("active_unacked", "active_acked", "cleared_unacked")


@dataclass
class ApiMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.requests = Counter(
            "hazwatch_api_requests",
            "HTTP requests answered, by route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "hazwatch_api_request_seconds",
            "Time to answer an HTTP request",
            ["method", "route"],
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.open_alarms = Gauge(
            "hazwatch_alarms_open",
            "Open alarm episodes by state and current tier",
            ["state", "tier"],
            registry=r,
        )
        self.database_up = Gauge(
            "hazwatch_api_database_up", "1 while the API reaches the database", registry=r
        )
        self.stream_clients = Gauge(
            "hazwatch_api_stream_clients", "Connected live-stream clients", registry=r
        )
        self.stream_disconnects = Counter(
            "hazwatch_api_stream_disconnects",
            "Live-stream clients the server disconnected, by reason",
            ["reason"],
            registry=r,
        )
        self.stream_listen_up = Gauge(
            "hazwatch_api_stream_listening", "1 while the LISTEN connection is up", registry=r
        )

    async def refresh_alarms(self, pool: asyncpg.Pool) -> None:
        try:
            async with pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT state, tier, count(*) AS n FROM alarms "
                    "WHERE state <> 'closed' GROUP BY state, tier"
                )
        except UNAVAILABLE_ERRORS:
            self.database_up.set(0)
            return
        self.database_up.set(1)
        counts = {(r["state"], r["tier"]): r["n"] for r in rows}
        for state in STATES:
            for tier in range(5):
                self.open_alarms.labels(state, str(tier)).set(counts.get((state, tier), 0))

    async def refresh_forever(self, pool: asyncpg.Pool, interval_s: float) -> None:
        """Refresh until cancelled. A database that answers with an error (an unmigrated
        schema) is logged once per distinct error, and the loop keeps going."""
        last_error = ""
        while True:
            try:
                await self.refresh_alarms(pool)
            except asyncpg.PostgresError as exc:
                if str(exc) != last_error:
                    log.warning("metrics: cannot count alarms: %s", exc)
                    last_error = str(exc)
            else:
                last_error = ""
            await asyncio.sleep(interval_s)


class MetricsMiddleware:
    """Counts and times every HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - started)
