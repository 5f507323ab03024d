"""The live stream: `GET /api/v1/stream` upgraded to a WebSocket (docs/api.md, "Live stream").

Authentication, in the first way that applies: an `Authorization: Bearer` header, a `token`
query parameter, or (for browsers that would rather not put a token in a URL) a first message
`{"token": "..."}` within 10 s of connecting. Any role may listen; a site-scoped user hears only
its sites. Query `sites=a,b` narrows further; `latest=false` turns off the latest values.

Messages, all JSON objects with a `type`: `hello` (who you are), `alarm_event`, `latest`,
`resync` (events may have been missed: reload). The server closes with 4401 for a bad token,
4429 after too many bad tokens, 1013 with reason "slow consumer" when a client cannot keep up,
and 1011 when the database is down at authentication.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.auth import Principal
from api.deps import Services, check_token
from api.errors import RateLimited, Unauthorized
from api.routes import API_PREFIX
from api.stream import SLOW_CONSUMER, Subscriber
from hazwatch.db import UNAVAILABLE_ERRORS

log = logging.getLogger(__name__)

router = APIRouter(prefix=API_PREFIX, tags=["stream"])

FIRST_MESSAGE_TIMEOUT_S = 10.0
CLOSE_BAD_TOKEN = 4401
CLOSE_RATE_LIMITED = 4429
CLOSE_TRY_AGAIN = 1013
CLOSE_INTERNAL = 1011


async def _token(ws: WebSocket) -> str | None:
    header = ws.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    if ws.query_params.get("token"):
        return ws.query_params["token"]
    try:
        first = await asyncio.wait_for(ws.receive_text(), timeout=FIRST_MESSAGE_TIMEOUT_S)
        message = orjson.loads(first)
    except (TimeoutError, orjson.JSONDecodeError):
        return None
    token = message.get("token") if isinstance(message, dict) else None
    return token if isinstance(token, str) else None


async def _authenticate(ws: WebSocket, svc: Services) -> Principal | None:
    secret = await _token(ws)
    client = ws.client.host if ws.client else "unknown"
    try:
        async with svc.pool.acquire(timeout=svc.settings.database.connect_timeout_s) as conn:
            return await check_token(svc, conn, secret, client)
    except Unauthorized as exc:
        await ws.close(CLOSE_BAD_TOKEN, exc.message)
    except RateLimited as exc:
        await ws.close(CLOSE_RATE_LIMITED, exc.message)
    except UNAVAILABLE_ERRORS:
        await ws.close(CLOSE_INTERNAL, "database unavailable")
    return None


async def _send_all(ws: WebSocket, sub: Subscriber) -> None:
    while True:
        message = await sub.queue.get()
        await ws.send_text(orjson.dumps(message).decode())


async def _drain_incoming(ws: WebSocket) -> None:
    """Clients need not send anything; reading notices when they go away."""
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await ws.receive_text()


@router.websocket("/stream")
async def stream(ws: WebSocket) -> None:
    svc: Services = ws.app.state.services
    await ws.accept()
    user = await _authenticate(ws, svc)
    if user is None:
        return
    wanted = ws.query_params.get("sites")
    sites = user.narrow(None if not wanted else [s for s in wanted.split(",") if s])
    want_latest = ws.query_params.get("latest", "true").lower() not in ("false", "0", "no")
    hello: dict[str, Any] = {
        "type": "hello",
        "user": user.name,
        "role": user.role.value,
        "sites": None if sites is None else sorted(sites),
        "latest": want_latest,
    }
    await ws.send_text(orjson.dumps(hello).decode())
    with svc.hub.subscribe(sites=sites, want_latest=want_latest) as sub:
        tasks = {
            asyncio.create_task(_send_all(ws, sub)),
            asyncio.create_task(_drain_incoming(ws)),
            asyncio.create_task(sub.closed.wait()),
        }
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            # A client that went away ends its tasks with a disconnect (WebSocketDisconnect, or
            # an OSError / RuntimeError from the server's transport): expected, not logged.
            for task in tasks:
                with contextlib.suppress(
                    asyncio.CancelledError, WebSocketDisconnect, OSError, RuntimeError
                ):
                    await task
        if sub.reason is not None:
            code = CLOSE_TRY_AGAIN if sub.reason == SLOW_CONSUMER else 1001
            log.info("live stream: closing %s's stream: %s", user.name, sub.reason)
            with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
                await ws.close(code, sub.reason)
