"""API errors: each carries its HTTP status and a short code; one renderer makes the JSON.

ApiError                      {"error": {"code": ..., "message": ...}}
├── Unauthorized      401     no token, an unknown, expired or revoked token
├── Forbidden         403     the role may not do this
├── NotFound          404     no such object, or one outside the user's site scope
├── Conflict          409     the action does not fit the object's state (double acknowledge)
├── Invalid           422     the request is well-formed but its content is not acceptable
├── RateLimited       429     too many failed token checks; carries Retry-After
└── Unavailable       503     the database cannot be reached; carries Retry-After

HazWatch errors raised below the API are translated here (AlarmNotFound -> 404,
AlarmActionRefused -> 409, DatabaseUnavailable and asyncpg connection errors -> 503), and
anything else becomes a JSON 500 with an id that is also in the log next to the traceback.
FastAPI's own validation errors keep their detail list but get the same envelope.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hazwatch.db import UNAVAILABLE_ERRORS
from hazwatch.errors import (
    AccountConflict,
    AccountError,
    AlarmActionRefused,
    AlarmNotFound,
    DatabaseUnavailable,
)

log = logging.getLogger(__name__)

RETRY_AFTER_S = 5


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Invalid(ApiError):
    status = 422
    code = "invalid"


class RateLimited(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class Unavailable(ApiError):
    status = 503
    code = "database_unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_S)})


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def render(exc: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(exc.code, exc.message), status_code=exc.status, headers=exc.headers
    )


def translate(exc: BaseException) -> ApiError | None:
    """The API error for a known exception from below the API, or None."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, AlarmNotFound):
        return NotFound(str(exc))
    if isinstance(exc, AlarmActionRefused | AccountConflict):
        return Conflict(str(exc))
    if isinstance(exc, AccountError):
        return NotFound(str(exc))
    if isinstance(exc, (DatabaseUnavailable, *UNAVAILABLE_ERRORS)):
        return Unavailable("the database is unavailable; try again shortly")
    return None


def _status_code(status: int) -> str:
    return {
        400: "bad_request",
        401: "unauthorized",
        403: "forbidden",
        404: "not_found",
        405: "method_not_allowed",
        406: "not_acceptable",
        413: "too_large",
        415: "unsupported_media_type",
    }.get(status, "http_error")


def install(app: FastAPI) -> None:
    """Register the handlers; the catch-all lives in `CatchAllMiddleware` so that an unknown
    error is rendered once, as JSON, and not re-raised into the server."""

    async def api_error(_request: Request, exc: Exception) -> JSONResponse:
        translated = translate(exc)
        assert translated is not None
        return render(translated)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # every method of the path, not only those of the first route that matched it
            methods = request.app.state.contract.allowed_methods(request.url.path)
            if methods:
                headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse(
            error_body(_status_code(exc.status_code), str(exc.detail)),
            status_code=exc.status_code,
            headers=headers,
        )

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            error_body("invalid", f"{where}: {first['msg']}", details=details), status_code=422
        )

    for cls in (ApiError, AlarmNotFound, AlarmActionRefused, AccountError, DatabaseUnavailable,
                *UNAVAILABLE_ERRORS):  # fmt: skip
        app.add_exception_handler(cls, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)


class CatchAllMiddleware:
    """Renders any exception that escaped the handlers as a JSON 500 with an id (or a 503 for
    a database outage), logs the traceback with that id, and does not re-raise."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            translated = translate(exc)
            if translated is None:
                error_id = uuid.uuid4().hex[:12]
                log.exception("unhandled error %s on %s %s", error_id, scope.get("method"),
                              scope.get("path"))  # fmt: skip
                response = JSONResponse(
                    error_body("internal", "internal error; see the server log", id=error_id),
                    status_code=500,
                )
            else:
                response = render(translated)
            await response(scope, receive, send)
