"""`hazwatch users` and `hazwatch tokens`: accounts for the API.

A token's secret is printed once, when it is created; the database keeps only its SHA-256.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.table import Table

from api import accounts
from api.auth import Role
from hazwatch.cli.common import DatabaseUrlOption, console, run, setup
from hazwatch.db import connection

users_app = typer.Typer(help="API users and their roles.", no_args_is_help=True)
tokens_app = typer.Typer(
    help="API tokens: create (shown once), list, revoke.", no_args_is_help=True
)


def _actor() -> str:
    return f"cli:{getpass.getuser()}"


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="user name")],
    role: Annotated[Role, typer.Option("--role", help="viewer, crew, operator, engineer, admin")],
    sites: Annotated[
        str | None, typer.Option("--sites", help="comma-separated site keys; default all sites")
    ] = None,
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
) -> None:
    """Add a user with a role and an optional site scope."""
    settings = setup(database_url)
    scope = None if sites is None else [s.strip() for s in sites.split(",") if s.strip()]

    async def go() -> accounts.UserRecord:
        async with connection(settings.database) as conn:
            return await accounts.create_user(conn, name, role, scope, actor=_actor())

    user = run(go())
    where = "all sites" if user.sites is None else ", ".join(user.sites)
    console.print(f"added user {user.name} ({user.role}, {where})")


@users_app.command("list")
def list_users(database_url: Annotated[str | None, DatabaseUrlOption] = None) -> None:
    """List users."""
    settings = setup(database_url)

    async def go() -> list[accounts.UserRecord]:
        async with connection(settings.database) as conn:
            return await accounts.list_users(conn)

    table = Table("name", "role", "sites", "disabled")
    for u in run(go()):
        table.add_row(u.name, u.role, "all" if u.sites is None else ",".join(u.sites),
                      "yes" if u.disabled else "")  # fmt: skip
    console.print(table)


@tokens_app.command("create")
def create_token(
    user: Annotated[str, typer.Argument(help="user name")],
    name: Annotated[str, typer.Option("--name", help="what the token is for")] = "",
    expires_days: Annotated[
        float | None, typer.Option("--expires-days", help="lifetime; default never expires")
    ] = None,
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
) -> None:
    """Create a token and print its secret (once: it is not stored)."""
    settings = setup(database_url)
    expires = None if expires_days is None else timedelta(days=expires_days)

    async def go() -> tuple[accounts.TokenRecord, str]:
        async with connection(settings.database) as conn:
            return await accounts.create_token(
                conn, user, name=name, expires_in=expires, now=datetime.now(UTC), actor=_actor()
            )

    record, secret = run(go())
    console.print(
        f"token {record.token_id} for {record.user} "
        f"(expires {record.expires_at.isoformat() if record.expires_at else 'never'}); "
        "the secret is shown only now:",
        highlight=False,
    )
    typer.echo(secret)


@tokens_app.command("list")
def list_tokens(
    user: Annotated[str | None, typer.Option("--user", help="only this user's tokens")] = None,
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
) -> None:
    """List tokens (prefixes only, never secrets)."""
    settings = setup(database_url)

    async def go() -> list[accounts.TokenRecord]:
        async with connection(settings.database) as conn:
            return await accounts.list_tokens(conn, user)

    table = Table("id", "user", "name", "prefix", "expires", "revoked", "last used")
    for t in run(go()):
        table.add_row(
            str(t.token_id), t.user, t.name, t.prefix,
            t.expires_at.isoformat() if t.expires_at else "never",
            t.revoked_at.isoformat() if t.revoked_at else "",
            t.last_used_at.isoformat() if t.last_used_at else "",
        )  # fmt: skip
    console.print(table)


@tokens_app.command("revoke")
def revoke_token(
    token: Annotated[str, typer.Argument(help="token id, or its prefix as listed")],
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
) -> None:
    """Revoke a token: it stops working at once."""
    settings = setup(database_url)
    key: int | str = int(token) if token.isdigit() else token

    async def go() -> accounts.TokenRecord:
        async with connection(settings.database) as conn:
            return await accounts.revoke_token(conn, key, now=datetime.now(UTC), actor=_actor())

    record = run(go())
    console.print(f"revoked token {record.token_id} of {record.user}")
