"""What a route receives: the app's services, a pooled connection, the authenticated user.

`Services` is built in the app's lifespan and stored on `app.state`; routes reach it through
these dependencies only, so a test can build an app on any database with any clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

import asyncpg
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import Permission, Principal, principal_for
from api.errors import Forbidden, RateLimited, Unauthorized, Unavailable
from api.metrics import ApiMetrics
from api.ratelimit import FailureLimiter
from api.stream import StreamHub
from hazwatch.config import Settings
from hazwatch.db import UNAVAILABLE_ERRORS

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    hub: StreamHub
    metrics: ApiMetrics
    limiter: FailureLimiter
    clock: Clock


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


ServicesDep = Annotated[Services, Depends(services)]


async def connection(svc: ServicesDep) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection for the request; a database outage becomes 503 here."""
    try:
        conn = await svc.pool.acquire(timeout=svc.settings.database.connect_timeout_s)
    except UNAVAILABLE_ERRORS as exc:
        raise Unavailable("the database is unavailable; try again shortly") from exc
    try:
        yield conn
    finally:
        await svc.pool.release(conn)


Conn = Annotated[asyncpg.Connection, Depends(connection)]

_bearer = HTTPBearer(
    auto_error=False,
    description="An API token from `hazwatch tokens create` (docs/api.md).",
)


def client_key(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def check_token(
    svc: Services, conn: asyncpg.Connection, secret: str | None, client: str
) -> Principal:
    """The user behind a token; 401 for a missing or bad one, 429 after too many bad ones."""
    now_s = time.monotonic()
    wait = svc.limiter.retry_after_s(client, now_s)
    if wait is not None:
        raise RateLimited("too many failed authentication attempts", retry_after_s=wait)
    if not secret:
        raise Unauthorized("a bearer token is required")
    principal = await principal_for(conn, secret, svc.clock())
    if principal is None:
        svc.limiter.failed(client, now_s)
        raise Unauthorized("the token is unknown, expired or revoked")
    return principal


async def authenticated(
    request: Request,
    svc: ServicesDep,
    conn: Conn,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    secret = credentials.credentials if credentials is not None else None
    return await check_token(svc, conn, secret, client_key(request))


def require(permission: Permission) -> Callable[..., object]:
    """A dependency that lets the request through only with `permission`."""

    async def dependency(
        principal: Annotated[Principal, Depends(authenticated)],
    ) -> Principal:
        if not principal.can(permission):
            raise Forbidden(f"role {principal.role} may not {permission.value.replace('_', ' ')}")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require(Permission.READ))]
Acknowledger = Annotated[Principal, Depends(require(Permission.ACKNOWLEDGE))]
Commenter = Annotated[Principal, Depends(require(Permission.COMMENT))]
Shelver = Annotated[Principal, Depends(require(Permission.SHELVE))]
Assigner = Annotated[Principal, Depends(require(Permission.ASSIGN))]
ServiceTaker = Annotated[Principal, Depends(require(Permission.OUT_OF_SERVICE))]
RuleEditor = Annotated[Principal, Depends(require(Permission.EDIT_RULES))]
Admin = Annotated[Principal, Depends(require(Permission.ADMIN))]
