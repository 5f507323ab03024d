"""`hazwatch simulate`: simulated field devices for the demo, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from hazwatch.cli.common import console, err_console, run, setup
from hazwatch.errors import RegistryError
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import load_registry
from simulators.modbus_server import QuietSource, SimFleet, SimTime, parse_fault

app = typer.Typer(help="Simulated field devices.", no_args_is_help=True)


@app.command("modbus")
def modbus_cmd(
    registry: Annotated[Path, typer.Option("--registry", help="registry YAML file")],
    seed: Annotated[int, typer.Option(help="random seed (value phases, fault draws)")] = 0,
    speed: Annotated[float, typer.Option(help="virtual seconds per wall second")] = 1.0,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="DEVICE=KIND[:ARG][@PROBABILITY], kinds dead, slow:SECONDS, exception:CODE, "
            "junk, drop; repeatable"
        ),
    ] = None,
    power_cycle: Annotated[
        list[str] | None,
        typer.Option(help="DEVICE:EVERY_S:OFF_S power-cycles the device's port; repeatable"),
    ] = None,
) -> None:
    """Serve every Modbus device of a registry on its host and port until interrupted."""
    setup()
    try:
        snapshot = snapshot_from_file(load_registry(registry))
    except RegistryError as exc:
        err_console.print(str(exc), highlight=False, markup=False)
        raise typer.Exit(1) from exc
    try:
        faults = [parse_fault(f) for f in fault or []]
        cycles = [_parse_cycle(c) for c in power_cycle or []]
    except ValueError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    unknown = [d for d, _ in faults if d not in snapshot.devices]
    unknown += [d for d, _, _ in cycles if d not in snapshot.devices]
    if unknown:
        err_console.print(f"[bold red]error:[/] unknown devices: {', '.join(unknown)}")
        raise typer.Exit(2)

    async def serve() -> None:
        source = QuietSource(snapshot, seed)
        async with SimFleet(snapshot, source, sim_time=SimTime(speed=speed), seed=seed) as fleet:
            for device, unit_fault in faults:
                fleet.set_fault(device, unit_fault)
            for (host, port), server in fleet.servers.items():
                console.print(f"serving {host}:{port} units {sorted(server.units)}")
            async with asyncio.TaskGroup() as tasks:
                for device, every_s, off_s in cycles:
                    tasks.create_task(fleet.power_cycles(device, every_s, off_s))
                tasks.create_task(asyncio.Event().wait())  # until interrupted

    try:
        run(serve())
    except KeyboardInterrupt:
        console.print("stopped")


def _parse_cycle(text: str) -> tuple[str, float, float]:
    device, _, rest = text.partition(":")
    every, _, off = rest.partition(":")
    try:
        every_s, off_s = float(every), float(off)
    except ValueError:
        raise ValueError(f"power cycle {text!r}: expected DEVICE:EVERY_S:OFF_S") from None
    if not 0 < off_s < every_s:
        raise ValueError(f"power cycle {text!r}: need 0 < OFF_S < EVERY_S")
    return device, every_s, off_s
