"""The FastAPI application: `create_app(settings)` builds it; its lifespan owns the I/O.

The lifespan opens the asyncpg pool, the live stream's LISTEN connection (api.stream) and the
metrics refresher, and closes them at shutdown. When the database is down at start-up the app
starts anyway with an empty pool and answers 503 until the database is back, so a supervisor
does not loop restarting it and /health stays green while /ready says why it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from fastapi import Depends, FastAPI

from api import errors
from api.contract import Contract, reject_unknown_query
from api.deps import Clock, Services
from api.metrics import ApiMetrics, MetricsMiddleware
from api.ratelimit import FailureLimiter
from api.routes import admin, alarms, console, ops, readings, registry, risk, rules, stream
from api.stream import StreamHub
from hazwatch.config import Settings
from hazwatch.db import create_pool
from hazwatch.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

DESCRIPTION = """Sites, assets, sensors, readings, alarms and their lifecycle, the four-colour
risk picture and a live stream. Every route under /api/v1 needs a bearer token
(`hazwatch tokens create`); what a token may do depends on its user's role
(viewer, crew, operator, engineer, admin) and site scope. Errors are JSON:
`{"error": {"code": ..., "message": ...}}`. See docs/api.md."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: Settings, *, clock: Clock = utc_now) -> FastAPI:
    metrics = ApiMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            pool = await create_pool(settings.database)
        except DatabaseUnavailable as exc:
            log.warning("database unavailable at start-up (%s); serving 503 until it is back", exc)
            lazy = settings.database.model_copy(update={"pool_min": 0})
            pool = await create_pool(lazy)
        hub = StreamHub(
            database=settings.database,
            pool=pool,
            metrics=metrics,
            queue_max=settings.api.stream_queue_max,
            latest_interval_s=settings.api.stream_latest_interval_s,
            clock=clock,
        )
        refresher = asyncio.create_task(
            metrics.refresh_forever(pool, settings.api.metrics_refresh_s), name="metrics"
        )
        try:
            async with hub:
                app.state.services = Services(
                    settings=settings,
                    pool=pool,
                    hub=hub,
                    metrics=metrics,
                    limiter=FailureLimiter(per_minute=settings.api.auth_failures_per_min),
                    clock=clock,
                )
                yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await pool.close()

    app = FastAPI(
        dependencies=[Depends(reject_unknown_query)],
        title="HazWatch API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
    )
    app.state.contract = Contract(app)
    errors.install(app)
    # The last added middleware is the outermost: metrics see the status the catch-all rendered.
    app.add_middleware(errors.CatchAllMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    for module in (registry, readings, alarms, rules, risk, admin, stream, ops, console):
        app.include_router(module.router)
    return app
