"""Roles, permissions and bearer tokens.

A token is a random secret shown once when it is created (`hw_` + 43 URL-safe characters);
the database keeps only its SHA-256 and a short prefix to recognise it in a list. A request
carries it as `Authorization: Bearer <token>`; the WebSocket stream also takes it as a `token`
query parameter or as its first message.

The role matrix (docs/api.md): each role has a fixed set of permissions, and each route asks
for one permission. A user with a site scope sees and acts only on those sites.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

TOKEN_PREFIX = "hw_"  # noqa: S105 - the public prefix of every token
PREFIX_CHARS = 10  # "hw_" + 7 characters, shown in token lists


class Role(StrEnum):
    VIEWER = "viewer"
    CREW = "crew"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    ADMIN = "admin"


class Permission(StrEnum):
    READ = "read"
    ACKNOWLEDGE = "acknowledge"
    COMMENT = "comment"
    SHELVE = "shelve"
    ASSIGN = "assign"
    OUT_OF_SERVICE = "out_of_service"
    EDIT_RULES = "edit_rules"
    ADMIN = "admin"


_OPERATOR = frozenset(
    {
        Permission.READ,
        Permission.ACKNOWLEDGE,
        Permission.COMMENT,
        Permission.SHELVE,
        Permission.ASSIGN,
    }
)
_ENGINEER = _OPERATOR | {Permission.EDIT_RULES, Permission.OUT_OF_SERVICE}

ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ}),
    Role.CREW: frozenset({Permission.READ, Permission.ACKNOWLEDGE, Permission.COMMENT}),
    Role.OPERATOR: _OPERATOR,
    Role.ENGINEER: _ENGINEER,
    Role.ADMIN: frozenset(Permission),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated user of one request."""

    user_id: int
    name: str
    role: Role
    site_scope: frozenset[str] | None  # None: every site
    token_id: int

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, site_key: str) -> bool:
        return self.site_scope is None or site_key in self.site_scope

    @property
    def scope_param(self) -> list[str] | None:
        """The scope as a query parameter: `($n::text[] IS NULL OR site.key = ANY($n))`."""
        return None if self.site_scope is None else sorted(self.site_scope)

    def narrow(self, sites: Iterable[str] | None) -> frozenset[str] | None:
        """The requested sites within this user's scope (None: all the user may see)."""
        wanted = None if sites is None else frozenset(sites)
        if wanted is None:
            return self.site_scope
        if self.site_scope is None:
            return wanted
        return wanted & self.site_scope


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def looks_like_token(secret: str) -> bool:
    return secret.startswith(TOKEN_PREFIX) and 20 <= len(secret) <= 200


_LOOKUP = """
SELECT t.token_id, t.last_used_at, u.user_id, u.name, u.role, u.site_scope
FROM api_tokens t JOIN users u USING (user_id)
WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND NOT u.disabled
  AND (t.expires_at IS NULL OR t.expires_at > $2)
"""

TOUCH_INTERVAL_S = 60.0


async def principal_for(conn: asyncpg.Connection, secret: str, now: datetime) -> Principal | None:
    """The user a token belongs to, or None for an unknown, expired or revoked token.
    `last_used_at` is updated at most once a minute per token."""
    if not looks_like_token(secret):
        return None
    row = await conn.fetchrow(_LOOKUP, hash_token(secret), now)
    if row is None:
        return None
    last = row["last_used_at"]
    if last is None or (now - last).total_seconds() > TOUCH_INTERVAL_S:
        await conn.execute(
            "UPDATE api_tokens SET last_used_at = $2 WHERE token_id = $1", row["token_id"], now
        )
    return _principal(row)


def _principal(row: Mapping[str, Any]) -> Principal:
    scope = row["site_scope"]
    return Principal(
        user_id=row["user_id"],
        name=row["name"],
        role=Role(row["role"]),
        site_scope=None if scope is None else frozenset(scope),
        token_id=row["token_id"],
    )
