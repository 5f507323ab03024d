"""Applies the SQL files of hazwatch/migrations in order, each in its own transaction.

Applied versions are recorded in `schema_migrations` with a checksum, so a second run is a no-op
and an applied file that was edited afterwards is reported instead of silently skipped. An
advisory lock keeps two migrators from racing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

from hazwatch.errors import ExtensionMissing, MigrationError

log = logging.getLogger(__name__)

INSTALL_SCRIPT = "deploy/timescaledb/install.sh"
_LOCK_KEY = 0x48415A57  # "HAZW"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("hazwatch.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return found


async def check_timescaledb(conn: asyncpg.Connection) -> None:
    """Fail with a message naming the install script when TimescaleDB cannot be used."""
    available = await conn.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
    )
    if available is None:
        raise ExtensionMissing(
            "the timescaledb extension is not installed on this PostgreSQL server; "
            f"run {INSTALL_SCRIPT} (as root) and try again"
        )
    preload = await conn.fetchval("SHOW shared_preload_libraries")
    if "timescaledb" not in preload:
        raise ExtensionMissing(
            "timescaledb is installed but not in shared_preload_libraries; "
            f"run {INSTALL_SCRIPT}, which configures and restarts the server"
        )


async def migrate(conn: asyncpg.Connection) -> list[Migration]:
    """Apply what is missing; returns the migrations applied by this call."""
    await check_timescaledb(conn)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        done: list[Migration] = []
        for migration in available_migrations():
            row = applied.get(migration.version)
            if row is not None:
                if row["checksum"] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed after "
                        "it was applied; add a new migration instead of editing an applied one"
                    )
                continue
            log.info("applying migration %04d_%s", migration.version, migration.name)
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def create_database(admin: asyncpg.Connection, name: str, *, drop: bool = False) -> None:
    """Create a database (dropping it first if asked), for the demo and the tests."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise MigrationError(f"refusing database name {name!r}")
    if drop:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    if not exists:
        await admin.execute(f'CREATE DATABASE "{name}"')
