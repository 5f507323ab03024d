"""Who am I (any user), and users and tokens (admins only; the CLI does the same)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query

from api import accounts
from api.auth import ROLE_PERMISSIONS
from api.deps import Admin, Conn, Reader, ServicesDep
from api.params import TokenId, UserName
from api.routes import API_PREFIX
from api.schemas import CONFLICT, NOT_FOUND, SECURED, Me, NewToken, Token, TokenBody, User, UserBody

router = APIRouter(prefix=API_PREFIX, tags=["users"], responses=SECURED)


def _user(u: accounts.UserRecord) -> User:
    return User(
        user_id=u.user_id,
        name=u.name,
        role=u.role,
        sites=None if u.sites is None else list(u.sites),
        disabled=u.disabled,
        created_at=u.created_at,
    )


def _token(t: accounts.TokenRecord) -> Token:
    return Token(**{f: getattr(t, f) for f in Token.model_fields})


@router.get("/me", response_model=Me, summary="The user behind the token, and what it may do")
async def me(user: Reader) -> Me:
    return Me(
        name=user.name,
        role=user.role,
        sites=user.scope_param,
        permissions=sorted(p.value for p in ROLE_PERMISSIONS[user.role]),
    )


@router.get("/users", response_model=list[User], summary="All users (admin)")
async def list_users(_admin: Admin, conn: Conn) -> list[User]:
    return [_user(u) for u in await accounts.list_users(conn)]


@router.post(
    "/users",
    responses=NOT_FOUND | CONFLICT,
    response_model=User,
    status_code=201,
    summary="Add a user (admin)",
)
async def create_user(body: UserBody, admin: Admin, conn: Conn) -> User:
    created = await accounts.create_user(conn, body.name, body.role, body.sites, actor=admin.name)
    return _user(created)


@router.get("/tokens", response_model=list[Token], summary="Tokens, without secrets (admin)")
async def list_tokens(
    _admin: Admin,
    conn: Conn,
    user: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")] = None,
) -> list[Token]:
    return [_token(t) for t in await accounts.list_tokens(conn, user)]


@router.post(
    "/users/{name}/tokens",
    responses=NOT_FOUND,
    response_model=NewToken,
    status_code=201,
    summary="Create a token for a user; the secret is in this answer only (admin)",
)
async def create_token(
    name: UserName, body: TokenBody, admin: Admin, conn: Conn, svc: ServicesDep
) -> NewToken:
    record, secret = await accounts.create_token(
        conn,
        name,
        name=body.name,
        expires_in=None if body.expires_days is None else timedelta(days=body.expires_days),
        now=svc.clock(),
        actor=admin.name,
    )
    return NewToken(**_token(record).model_dump(), secret=secret)


@router.post(
    "/tokens/{token_id}/revoke",
    responses=NOT_FOUND | CONFLICT,
    response_model=Token,
    summary="Revoke a token (admin)",
)
async def revoke_token(token_id: TokenId, admin: Admin, conn: Conn, svc: ServicesDep) -> Token:
    record = await accounts.revoke_token(conn, token_id, now=svc.clock(), actor=admin.name)
    return _token(record)
