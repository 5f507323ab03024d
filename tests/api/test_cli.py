"""`hazwatch users add` and `hazwatch tokens create|list|revoke` against a real database.

A synchronous test: each command runs its own event loop (asyncio.run), as it does in a shell.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from typer.testing import CliRunner

from api.auth import hash_token
from hazwatch.cli import app
from tests.api.conftest import seed

pytestmark = pytest.mark.integration


def query(db_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(db_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def test_users_and_tokens(db_url: str) -> None:
    async def seeded() -> None:
        conn = await asyncpg.connect(db_url)
        try:
            await seed(conn)
        finally:
            await conn.close()

    asyncio.run(seeded())
    runner = CliRunner()
    db = ["--database-url", db_url]
    r = runner.invoke(app, ["users", "add", "li.wei", "--role", "crew", "--sites", "north", *db])
    assert r.exit_code == 0, r.output
    assert "crew" in r.output
    r = runner.invoke(app, ["users", "add", "li.wei", "--role", "crew", *db])
    assert r.exit_code == 1
    assert "exists already" in r.output
    r = runner.invoke(app, ["users", "add", "x", "--role", "crew", "--sites", "nowhere", *db])
    assert r.exit_code == 1
    assert "unknown site" in r.output

    r = runner.invoke(app, ["tokens", "create", "li.wei", "--name", "tablet", *db])
    assert r.exit_code == 0, r.output
    secret = r.output.strip().splitlines()[-1]
    assert secret.startswith("hw_")
    (row,) = query(
        db_url,
        "SELECT t.token_id, t.token_hash, u.site_scope FROM api_tokens t "
        "JOIN users u USING (user_id) WHERE u.name = 'li.wei'",
    )
    assert bytes(row["token_hash"]) == hash_token(secret)  # stored hashed, never in clear
    assert row["site_scope"] == ["north"]
    r = runner.invoke(app, ["tokens", "list", "--user", "li.wei", *db])
    assert secret[:10] in r.output
    assert secret not in r.output
    r = runner.invoke(app, ["tokens", "revoke", str(row["token_id"]), *db])
    assert r.exit_code == 0, r.output
    (revoked,) = query(
        db_url, "SELECT revoked_at FROM api_tokens WHERE token_id = $1", row["token_id"]
    )
    assert revoked["revoked_at"] is not None
    actions = [a["action"] for a in query(db_url, "SELECT action FROM audit_log")]
    assert actions.count("token.revoke") == 1
