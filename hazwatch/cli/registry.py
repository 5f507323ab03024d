"""`hazwatch registry`: load the registry file into the database, and show what is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from hazwatch.cli.common import DatabaseUrlOption, console, err_console, run, setup
from hazwatch.db import connection
from hazwatch.errors import RegistryError
from hazwatch.registry.model import RegistryFile
from hazwatch.registry.parse import load_registry
from hazwatch.registry.snapshot import RegistrySnapshot
from hazwatch.registry.store import store_registry

app = typer.Typer(help="Registry as code: sites, assets, devices, sensors.", no_args_is_help=True)


@app.command("check")
def check_cmd(file: Annotated[Path, typer.Argument(help="registry YAML file")]) -> None:
    """Validate a registry file without touching the database."""
    setup()
    registry = _load_or_exit(file)
    n = sum(len(d.sensors) for s in registry.sites for d in s.devices)
    console.print(f"{file}: valid ({len(registry.sites)} sites, {n} measured sensors)")


@app.command("load")
def load_cmd(
    file: Annotated[Path, typer.Argument(help="registry YAML file")],
    database_url: Annotated[str | None, DatabaseUrlOption] = None,
) -> None:
    """Validate the whole file, then upsert it in one transaction."""
    settings = setup(database_url)
    registry = _load_or_exit(file)

    async def go() -> None:
        async with connection(settings.database) as conn:
            summary = await store_registry(conn, registry)
        console.print(
            f"loaded {file}: {summary.sites} sites, {summary.assets} assets, "
            f"{summary.devices} devices, {summary.sensors} sensors"
        )
        for table, keys in summary.deactivated.items():
            console.print(f"deactivated {table} no longer in the file: {', '.join(keys)}")

    run(go())


@app.command("show")
def show_cmd(database_url: Annotated[str | None, DatabaseUrlOption] = None) -> None:
    """List the loaded sensors by site and device."""
    settings = setup(database_url)

    async def go() -> RegistrySnapshot:
        async with connection(settings.database) as conn:
            return await RegistrySnapshot.load(conn)

    snapshot = run(go())
    table = Table(title=f"{len(snapshot.sensors)} sensors on {len(snapshot.sites)} sites")
    for column in ("id", "sensor", "site", "asset", "kind", "unit", "range", "period s", "via"):
        table.add_column(column)
    for s in snapshot.sensors:
        via = "derived"
        if s.device_key is not None:
            via = snapshot.devices[s.device_key].protocol
        table.add_row(
            str(s.sensor_id), s.key, s.site_key, s.asset_key, s.kind, s.unit,
            f"{s.range_min:g}..{s.range_max:g}", "-" if s.period_s is None else f"{s.period_s:g}",
            via,
        )  # fmt: skip
    console.print(table)


def _load_or_exit(file: Path) -> RegistryFile:
    try:
        return load_registry(file)
    except RegistryError as exc:
        err_console.print(f"[bold red]{exc.source}[/]: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            err_console.print(f"  {problem}", highlight=False, markup=False)
        raise typer.Exit(1) from exc
