"""`hazwatch db`: create and migrate the database."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from hazwatch import migrate as migrations
from hazwatch.cli.common import DatabaseUrlOption, console, run, setup
from hazwatch.config import DatabaseSettings
from hazwatch.db import connection
from hazwatch.retention import apply_retention

app = typer.Typer(help="Create and migrate the database.", no_args_is_help=True)


@app.command("migrate")
def migrate_cmd(
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
    create: Annotated[
        bool, typer.Option(help="create the database first if it is missing")
    ] = False,
) -> None:
    """Apply the SQL migrations that are not applied yet (a second run does nothing)."""
    settings = setup(database_url)

    async def go() -> None:
        if create:
            await create_if_missing(settings.database)
        async with connection(settings.database) as conn:
            applied = await migrations.migrate(conn)
        if applied:
            for m in applied:
                console.print(f"applied {m.version:04d}_{m.name}")
        else:
            console.print("database is up to date")

    run(go())


async def create_if_missing(settings: DatabaseSettings, *, drop: bool = False) -> None:
    """Create the database named in the URL, connecting to `postgres` on the same server."""
    base, _, name = settings.url.rpartition("/")
    name = name.split("?")[0]
    admin = settings.model_copy(update={"url": f"{base}/postgres"})
    async with connection(admin) as conn:
        await migrations.create_database(conn, name, drop=drop)


@app.command("retention")
def retention_cmd(database_url: Annotated[str | None, DatabaseUrlOption] = None) -> None:
    """Drop raw readings and rollups older than their retention settings."""
    settings = setup(database_url)

    async def go() -> None:
        async with connection(settings.database) as conn:
            result = await apply_retention(conn, settings.ingest, now=dt.datetime.now(dt.UTC))
        console.print(
            f"dropped {result.readings_chunks} raw chunk(s), {result.rollup_chunks} rollup chunk(s)"
        )

    run(go())
