"""Liveness, readiness and Prometheus metrics: open routes, read-only, outside /api/v1.

- `/health`: the process answers (no database work): for a supervisor's liveness probe.
- `/ready`: the database answers a query: 200, or 503 JSON with Retry-After while it is down.
- `/metrics`: this API process's metrics in Prometheus text format (api.metrics).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import ServicesDep
from api.errors import Unavailable
from api.schemas import Health, Ready
from hazwatch.db import UNAVAILABLE_ERRORS

router = APIRouter(tags=["operations"])

READY_TIMEOUT_S = 2.0


@router.get("/health", response_model=Health, summary="The process is alive")
async def health() -> Health:
    return Health(status="ok")


@router.get(
    "/ready",
    response_model=Ready,
    summary="The database answers (503 while it does not)",
    responses={503: {"description": "the database is unavailable"}},
)
async def ready(svc: ServicesDep) -> Ready:
    timeout = min(READY_TIMEOUT_S, svc.settings.database.connect_timeout_s)
    try:
        async with svc.pool.acquire(timeout=timeout) as conn:
            await conn.fetchval("SELECT 1", timeout=timeout)
    except UNAVAILABLE_ERRORS as exc:
        svc.metrics.database_up.set(0)
        raise Unavailable("the database is unavailable; try again shortly") from exc
    svc.metrics.database_up.set(1)
    return Ready(
        status="ready",
        database="up",
        stream="listening" if svc.hub.listening.is_set() else "reconnecting",
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics of this API process",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(svc: ServicesDep) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
