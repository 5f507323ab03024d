"""Users and API tokens in the database, shared by the `hazwatch users|tokens` commands and the
admin routes. A token's secret is returned once by `create_token`; only its SHA-256 is stored.
Creating, revoking and changing accounts is written to `audit_log`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson

from api.auth import PREFIX_CHARS, Role, hash_token, new_secret
from hazwatch.errors import AccountConflict, AccountError


@dataclass(frozen=True, slots=True)
class UserRecord:
    user_id: int
    name: str
    role: Role
    sites: tuple[str, ...] | None
    disabled: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TokenRecord:
    token_id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


async def _audit(
    conn: asyncpg.Connection, actor: str, action: str, target: str, after: dict[str, Any] | None
) -> None:
    await conn.execute(
        "INSERT INTO audit_log (actor, action, target, after) VALUES ($1, $2, $3, $4::jsonb)",
        actor,
        action,
        target,
        None if after is None else orjson.dumps(after).decode(),
    )


def _user(r: asyncpg.Record) -> UserRecord:
    sites = r["site_scope"]
    return UserRecord(
        user_id=r["user_id"],
        name=r["name"],
        role=Role(r["role"]),
        sites=None if sites is None else tuple(sites),
        disabled=r["disabled"],
        created_at=r["created_at"],
    )


async def create_user(
    conn: asyncpg.Connection,
    name: str,
    role: Role,
    sites: Sequence[str] | None,
    *,
    actor: str,
) -> UserRecord:
    """Add a user; every site in `sites` must exist (a typo would lock the user out)."""
    async with conn.transaction():
        if sites is not None:
            known = {
                r["key"]
                for r in await conn.fetch("SELECT key FROM sites WHERE key = ANY($1)", list(sites))
            }
            unknown = sorted(set(sites) - known)
            if unknown:
                raise AccountError(f"unknown site(s): {', '.join(unknown)}")
        try:
            row = await conn.fetchrow(
                """INSERT INTO users (name, role, site_scope) VALUES ($1, $2, $3)
                   RETURNING user_id, name, role, site_scope, disabled, created_at""",
                name,
                role.value,
                None if sites is None else sorted(set(sites)),
            )
        except asyncpg.UniqueViolationError:
            raise AccountConflict(f"a user named {name!r} exists already") from None
        await _audit(
            conn, actor, "user.create", f"user:{name}", {"role": role.value, "sites": sites}
        )
    return _user(row)


async def list_users(conn: asyncpg.Connection) -> list[UserRecord]:
    rows = await conn.fetch(
        "SELECT user_id, name, role, site_scope, disabled, created_at FROM users ORDER BY name"
    )
    return [_user(r) for r in rows]


_LISTED_COLUMNS = (
    "t.token_id, u.name AS user, t.name, t.prefix, t.created_at, t.expires_at, t.revoked_at, "
    "t.last_used_at"
)


async def create_token(
    conn: asyncpg.Connection,
    user: str,
    *,
    name: str,
    expires_in: timedelta | None,
    now: datetime,
    actor: str,
) -> tuple[TokenRecord, str]:
    """A new token for `user`: its record and the secret, which is never stored."""
    secret = new_secret()
    async with conn.transaction():
        user_id = await conn.fetchval(
            "SELECT user_id FROM users WHERE name = $1 AND NOT disabled", user
        )
        if user_id is None:
            raise AccountError(f"no active user {user!r}")
        token_id = await conn.fetchval(
            """INSERT INTO api_tokens (user_id, name, token_hash, prefix, created_at, expires_at)
               VALUES ($1, $2, $3, $4, $5, $6) RETURNING token_id""",
            user_id,
            name,
            hash_token(secret),
            secret[:PREFIX_CHARS],
            now,
            None if expires_in is None else now + expires_in,
        )
        await _audit(conn, actor, "token.create", f"user:{user}", {"token_id": token_id})
        row = await conn.fetchrow(
            f"SELECT {_LISTED_COLUMNS} FROM api_tokens t JOIN users u USING (user_id) "  # noqa: S608
            "WHERE t.token_id = $1",
            token_id,
        )
    return TokenRecord(**dict(row)), secret


async def list_tokens(conn: asyncpg.Connection, user: str | None = None) -> list[TokenRecord]:
    rows = await conn.fetch(
        f"SELECT {_LISTED_COLUMNS} FROM api_tokens t JOIN users u USING (user_id) "  # noqa: S608
        "WHERE ($1::text IS NULL OR u.name = $1) ORDER BY t.token_id",
        user,
    )
    return [TokenRecord(**dict(r)) for r in rows]


async def revoke_token(
    conn: asyncpg.Connection, token: int | str, *, now: datetime, actor: str
) -> TokenRecord:
    """Revoke a token by id or by its prefix (as shown in lists); revoking twice is refused."""
    async with conn.transaction():
        if isinstance(token, int):
            rows = await conn.fetch("SELECT token_id FROM api_tokens WHERE token_id = $1", token)
        else:
            rows = await conn.fetch("SELECT token_id FROM api_tokens WHERE prefix = $1", token)
        if not rows:
            raise AccountError(f"no token {token!r}")
        if len(rows) > 1:
            raise AccountError(f"prefix {token!r} matches {len(rows)} tokens; use the id")
        token_id = rows[0]["token_id"]
        done = await conn.fetchval(
            """UPDATE api_tokens SET revoked_at = $2
               WHERE token_id = $1 AND revoked_at IS NULL RETURNING token_id""",
            token_id,
            now,
        )
        if done is None:
            raise AccountConflict(f"token {token_id} is revoked already")
        await _audit(conn, actor, "token.revoke", f"token:{token_id}", None)
        row = await conn.fetchrow(
            f"SELECT {_LISTED_COLUMNS} FROM api_tokens t JOIN users u USING (user_id) "  # noqa: S608
            "WHERE t.token_id = $1",
            token_id,
        )
    return TokenRecord(**dict(row))
