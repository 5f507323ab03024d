"""`hazwatch simulate`: run the plant simulation, publish it, export it, replay it, check it.

    hazwatch simulate mqtt --registry deploy/demo/anshan.yaml --scenario demo --seed 1
    hazwatch simulate modbus --registry deploy/demo/anshan.yaml --scenario demo --fault lel-gw3=dead
    hazwatch simulate export --registry ... --scenario leak --duration 1800 --out leak.jsonl
    hazwatch simulate replay leak.jsonl --speed 10 --shift-to-now
    hazwatch simulate check --registry ... --scenario demo
    hazwatch simulate scenarios

Each command builds one `Simulation` with `_simulation()`; a new transport (Modbus) adds its
command here and reuses it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer

from hazwatch.cli.common import console, err_console, setup
from hazwatch.config import Settings
from hazwatch.errors import HazwatchError, RegistryError, ScenarioError
from hazwatch.registry.offline import snapshot_from_file
from hazwatch.registry.parse import load_registry
from simulators import expectations
from simulators.delivery import Delivery
from simulators.export import write_csv, write_jsonl
from simulators.modbus_server import SimFleet, SimTime, SimulationSource, parse_fault
from simulators.mqtt_publisher import MqttPublisher, PublisherConfig, PublishReport
from simulators.scenario import QUIET, Scenario, load_scenario, packaged_scenarios
from simulators.simulation import DeviceReading, Simulation
from simulators.source import RecordedSource

app = typer.Typer(
    help="Simulators: a seeded model of the plant, published over MQTT, exported or replayed.",
    no_args_is_help=True,
)


class Protocols(StrEnum):
    MQTT = "mqtt"
    MODBUS = "modbus"
    ALL = "all"


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


RegistryOpt = Annotated[Path, typer.Option("--registry", "-r", help="registry YAML file")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="the run's seed")]
ScenarioOpt = Annotated[
    str | None,
    typer.Option("--scenario", "-s", help="a packaged scenario's name or a scenario file"),
]
StartOpt = Annotated[
    str | None,
    typer.Option("--start", help="virtual start: RFC 3339 time or epoch ms (default: now)"),
]
RateOpt = Annotated[
    float | None,
    typer.Option(
        "--rate",
        min=0.001,
        help="periodic readings per virtual second over the published devices: scales every "
        "sensor's period by (natural rate / N); physics and event streams are unchanged",
    ),
]
DevicesOpt = Annotated[
    str | None, typer.Option("--devices", help="comma-separated device keys (default: all)")
]
SitesOpt = Annotated[
    str | None, typer.Option("--sites", help="comma-separated site keys (default: all)")
]
HostOpt = Annotated[str | None, typer.Option("--mqtt-host", help="default: HAZWATCH_MQTT__HOST")]
PortOpt = Annotated[int | None, typer.Option("--mqtt-port", help="default: HAZWATCH_MQTT__PORT")]
RootOpt = Annotated[
    str | None, typer.Option("--topic-root", help="default: HAZWATCH_MQTT__TOPIC_ROOT")
]
BatchOpt = Annotated[int, typer.Option("--batch", min=1, help="readings per message (array)")]
InflightOpt = Annotated[
    int, typer.Option("--max-inflight", min=1, help="unacknowledged messages per device")
]
KeepaliveOpt = Annotated[
    int, typer.Option("--keepalive", min=1, help="MQTT keepalive s (the will fires at 1.5x)")
]


@app.command("mqtt")
def mqtt_cmd(
    *,
    registry: RegistryOpt,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    start: StartOpt = None,
    duration: Annotated[
        float | None, typer.Option("--duration", help="virtual seconds (default: until Ctrl-C)")
    ] = None,
    speed: Annotated[
        float, typer.Option("--speed", min=0, help="virtual s per real s; 0: no pacing")
    ] = 1.0,
    as_fast_as_possible: Annotated[
        bool, typer.Option("--as-fast-as-possible", help="same as --speed 0")
    ] = False,
    rate: RateOpt = None,
    devices: DevicesOpt = None,
    sites: SitesOpt = None,
    protocols: Annotated[
        Protocols, typer.Option("--protocols", help="which registry devices to publish")
    ] = Protocols.MQTT,
    mqtt_host: HostOpt = None,
    mqtt_port: PortOpt = None,
    topic_root: RootOpt = None,
    batch: BatchOpt = 1,
    max_inflight: InflightOpt = 100,
    keepalive: KeepaliveOpt = 30,
) -> None:
    """Publish the simulated readings per the MQTT contract, paced on a virtual clock."""
    settings = setup()
    with _clear_errors():
        sim, plan = _simulation(
            registry, seed=seed, scenario=scenario, start=start, rate=rate,
            devices=devices, sites=sites, protocols=protocols,
        )  # fmt: skip
        config = _publisher_config(
            settings, host=mqtt_host, port=mqtt_port, root=topic_root, keepalive=keepalive,
            speed=0.0 if as_fast_as_possible else speed, duration=duration, batch=batch,
            max_inflight=max_inflight,
        )  # fmt: skip
        delivery = Delivery(plan, seed=seed, start_ms=sim.start_ms)
        console.print(
            f"publishing {len(sim.selected)} device(s), scenario {plan.name}, seed {seed}, "
            f"{sim.readings_per_s() * config.speed:.1f} readings/s real time"
            if config.speed
            else f"publishing {len(sim.selected)} device(s) as fast as possible"
        )
        report = _publish(MqttPublisher(sim, config, delivery=delivery))
    _print_report(report)


@app.command("modbus")
def modbus_cmd(
    *,
    registry: RegistryOpt,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    start: StartOpt = None,
    speed: Annotated[float, typer.Option("--speed", min=0.001, help="virtual s per real s")] = 1.0,
    devices: DevicesOpt = None,
    sites: SitesOpt = None,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="DEVICE=KIND[:ARG][@PROBABILITY] with kinds dead, slow:SECONDS, "
            "exception:CODE, junk, drop; repeatable",
        ),
    ] = None,
    power_cycle: Annotated[
        list[str] | None,
        typer.Option(
            "--power-cycle", help="DEVICE:EVERY_S:OFF_S power-cycles the device's port; repeatable"
        ),
    ] = None,
) -> None:
    """Serve the registry's Modbus devices on their hosts and ports, from the same plant models
    as the MQTT publisher, until Ctrl-C. Transport faults (--fault, --power-cycle) come on top
    of the scenario's sensor faults and dropouts."""
    setup()
    with _clear_errors():
        sim, plan = _simulation(
            registry, seed=seed, scenario=scenario, start=start, rate=None,
            devices=devices, sites=sites, protocols=Protocols.MODBUS,
        )  # fmt: skip
        snapshot = snapshot_from_file(load_registry(registry))
        faults = [parse_fault(f) for f in fault or []]
        cycles = [_parse_cycle(c) for c in power_cycle or []]
        unknown = [d for d, _ in faults] + [d for d, _, _ in cycles]
        unknown = [d for d in unknown if d not in sim.selected]
        if unknown:
            raise typer.BadParameter(f"not a served Modbus device: {', '.join(unknown)}")
    served = set(sim.selected)
    source = SimulationSource(sim)

    async def serve() -> None:
        async with SimFleet(
            snapshot, source, sim_time=SimTime(speed=speed), seed=seed, devices=served
        ) as fleet:
            for device, unit_fault in faults:
                fleet.set_fault(device, unit_fault)
            for (host, port), server in fleet.servers.items():
                console.print(f"serving {host}:{port} units {sorted(server.units)}")
            console.print(f"scenario {plan.name}, seed {seed}, speed {speed:g}")
            async with asyncio.TaskGroup() as tasks:
                for device, every_s, off_s in cycles:
                    tasks.create_task(fleet.power_cycles(device, every_s, off_s))
                tasks.create_task(asyncio.Event().wait())  # until interrupted

    with suppress(KeyboardInterrupt):
        asyncio.run(serve())
    console.print("stopped")


def _parse_cycle(text: str) -> tuple[str, float, float]:
    device, _, rest = text.partition(":")
    every, _, off = rest.partition(":")
    try:
        every_s, off_s = float(every), float(off)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: expected DEVICE:EVERY_S:OFF_S", param_hint="--power-cycle"
        ) from None
    if not 0 < off_s < every_s:
        raise typer.BadParameter(f"{text!r}: need 0 < OFF_S < EVERY_S", param_hint="--power-cycle")
    return device, every_s, off_s


@app.command("replay")
def replay_cmd(
    *,
    file: Annotated[Path, typer.Argument(help="a JSON-lines export")],
    speed: Annotated[float, typer.Option("--speed", min=0, help="0: no pacing")] = 1.0,
    shift_to_now: Annotated[
        bool, typer.Option("--shift-to-now", help="move timestamps so the file starts now")
    ] = False,
    mqtt_host: HostOpt = None,
    mqtt_port: PortOpt = None,
    topic_root: RootOpt = None,
    batch: BatchOpt = 1,
    max_inflight: InflightOpt = 100,
    keepalive: KeepaliveOpt = 30,
) -> None:
    """Publish a recorded stream (simulate export --format jsonl) in its own order and timing."""
    settings = setup()
    with _clear_errors():
        source = RecordedSource(file)
        if shift_to_now:
            source = RecordedSource(file, shift_ms=_now_ms() - source.start_ms)
        config = _publisher_config(
            settings, host=mqtt_host, port=mqtt_port, root=topic_root, keepalive=keepalive,
            speed=speed, duration=None, batch=batch, max_inflight=max_inflight,
        )  # fmt: skip
        report = _publish(MqttPublisher(source, config))
    _print_report(report)


@app.command("export")
def export_cmd(
    *,
    registry: RegistryOpt,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    start: StartOpt = None,
    duration: Annotated[
        float | None,
        typer.Option("--duration", help="virtual seconds (default: the scenario's, or 3600)"),
    ] = None,
    rate: RateOpt = None,
    devices: DevicesOpt = None,
    sites: SitesOpt = None,
    protocols: Annotated[Protocols, typer.Option("--protocols")] = Protocols.ALL,
    fmt: Annotated[Format, typer.Option("--format", help="jsonl or csv")] = Format.JSONL,
    out: Annotated[str, typer.Option("--out", "-o", help="output file; - for stdout")] = "-",
    delivery: Annotated[
        bool, typer.Option(help="apply the scenario's duplicate and reorder faults")
    ] = True,
) -> None:
    """Write the deterministic stream (as fast as the machine goes) to JSON lines or CSV."""
    setup()
    with _clear_errors():
        sim, plan = _simulation(
            registry, seed=seed, scenario=scenario, start=start, rate=rate,
            devices=devices, sites=sites, protocols=protocols,
        )  # fmt: skip
        length_s = duration or plan.duration_s or 3600.0
        stream = sim.run(round(length_s * 1000))
        if delivery:
            stream = _delivered(stream, Delivery(plan, seed=seed, start_ms=sim.start_ms))
        writer = write_jsonl if fmt is Format.JSONL else write_csv
        with _output(out) as f:
            count = writer(stream, f)
    err_console.print(f"wrote {count} readings over {length_s:g} virtual s")


@app.command("check")
def check_cmd(
    registry: RegistryOpt,
    scenario: Annotated[str, typer.Option("--scenario", "-s", help="name or file")],
    seeds: Annotated[str, typer.Option("--seeds", help="comma-separated seeds")] = "0",
    start: StartOpt = None,
    duration: Annotated[float | None, typer.Option("--duration")] = None,
) -> None:
    """Run a scenario in virtual time and check every tier crossing it promises."""
    setup()
    missed = 0
    with _clear_errors():
        for seed in _ints(seeds):
            sim, plan = _simulation(
                registry, seed=seed, scenario=scenario, start=start, rate=None,
                devices=None, sites=None, protocols=Protocols.ALL,
            )  # fmt: skip
            last_s = max((e.by_s for e in plan.expect), default=0.0)
            length_ms = round((duration or plan.duration_s or last_s + 60) * 1000)
            results = expectations.check(
                sim.plant, plan, sim.run(length_ms), start_ms=sim.start_ms,
                end_ms=sim.start_ms + length_ms,
            )  # fmt: skip
            for result in results:
                missed += not result.met
                console.print(f"seed {seed}: {result}", highlight=False, markup=False)
    if missed:
        err_console.print(f"{missed} promised crossing(s) missed")
        raise typer.Exit(1)


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the packaged scenarios."""
    for name in packaged_scenarios():
        plan = load_scenario(name)
        console.print(f"[bold]{name}[/]: {plan.description.strip()}", highlight=False)


# ---------------------------------------------------------------------------------------------


def _simulation(
    registry_file: Path,
    *,
    seed: int,
    scenario: str | None,
    start: str | None,
    rate: float | None,
    devices: str | None,
    sites: str | None,
    protocols: Protocols,
) -> tuple[Simulation, Scenario]:
    registry = load_registry(registry_file)
    plan = load_scenario(scenario) if scenario else QUIET
    start_ms = _parse_start(start)
    probe = Simulation(registry, seed=seed, start_ms=start_ms, scenario=plan)
    chosen = _choose(probe, devices=devices, sites=sites, protocols=protocols)
    if not chosen:
        raise typer.BadParameter("no device matches --devices/--sites/--protocols")
    scale = 1.0
    if rate is not None:
        natural = Simulation(probe.plant, seed=seed, start_ms=start_ms, scenario=plan,
                             devices=chosen).readings_per_s()  # fmt: skip
        if natural == 0:
            raise typer.BadParameter("--rate: the chosen devices have no periodic sensors")
        scale = natural / rate
    sim = Simulation(
        probe.plant, seed=seed, start_ms=start_ms, scenario=plan, period_scale=scale,
        devices=chosen,
    )  # fmt: skip
    return sim, plan


def _choose(
    sim: Simulation, *, devices: str | None, sites: str | None, protocols: Protocols
) -> list[str]:
    plant = sim.plant
    wanted = set(_names(devices)) if devices else None
    where = set(_names(sites)) if sites else None
    for name in wanted or ():
        if name not in plant.devices:
            raise typer.BadParameter(f"unknown device {name!r}", param_hint="--devices")
    for name in where or ():
        if name not in plant.sites:
            raise typer.BadParameter(f"unknown site {name!r}", param_hint="--sites")
    return [
        d.key
        for d in plant.devices.values()
        if (wanted is None or d.key in wanted)
        and (where is None or d.site in where)
        and (protocols is Protocols.ALL or d.protocol == protocols.value)
    ]


def _publisher_config(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    root: str | None,
    keepalive: int,
    speed: float,
    duration: float | None,
    batch: int,
    max_inflight: int,
) -> PublisherConfig:
    mqtt = settings.mqtt
    password = mqtt.password.get_secret_value() if mqtt.password is not None else None
    return PublisherConfig(
        host=host or mqtt.host,
        port=port or mqtt.port,
        username=mqtt.username,
        password=password,
        topic_root=root or mqtt.topic_root,
        keepalive_s=keepalive,
        speed=speed,
        duration_s=duration,
        batch=batch,
        max_inflight=max_inflight,
    )


def _publish(publisher: MqttPublisher) -> PublishReport:
    """Run until the end or Ctrl-C/SIGTERM, which stop it cleanly (statuses go offline)."""

    def stop(_signum: int, _frame: object) -> None:
        publisher.stop()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return publisher.run()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _print_report(report: PublishReport) -> None:
    console.print(
        f"published {report.messages} messages ({report.readings} readings) over "
        f"{report.virtual_s:.0f} virtual s in {report.real_s:.1f} s: acked {report.acked}, "
        f"rejected {report.rejected}, unacked {report.unacked}, unsent {report.unsent}, "
        f"duplicated {report.duplicated}, delayed {report.delayed}"
    )
    if report.lost or report.unsent:
        err_console.print("[bold red]some messages were not acknowledged by the broker[/]")
        raise typer.Exit(1)


def _delivered(stream: Iterator[DeviceReading], delivery: Delivery) -> Iterator[DeviceReading]:
    for r in stream:
        yield from delivery.feed([r], r.ts_ms)
    yield from delivery.flush()


@contextmanager
def _output(out: str) -> Iterator[TextIO]:
    if out == "-":
        yield sys.stdout
        return
    with Path(out).open("w", encoding="utf-8", newline="") as f:
        yield f


@contextmanager
def _clear_errors() -> Iterator[None]:
    try:
        yield
    except (RegistryError, ScenarioError) as exc:
        err_console.print(f"[bold red]{exc.source}[/]: {len(exc.problems)} problem(s)")
        for problem in exc.problems:
            err_console.print(f"  {problem}", highlight=False, markup=False)
        raise typer.Exit(1) from exc
    except (HazwatchError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _parse_start(start: str | None) -> int:
    if start is None:
        return _now_ms()
    if start.lstrip("-").isdigit():
        return int(start)
    try:
        when = dt.datetime.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(
            f"{start!r} is neither RFC 3339 nor epoch ms", param_hint="--start"
        ) from None
    if when.tzinfo is None:
        raise typer.BadParameter(
            "give a time zone (2026-11-28T08:00:00+08:00)", param_hint="--start"
        )
    return round(when.timestamp() * 1000)


def _now_ms() -> int:
    return int(time.time()) * 1000  # whole seconds: a readable start


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _ints(text: str) -> list[int]:
    try:
        return [int(n) for n in _names(text)]
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a list of integers", param_hint="--seeds"
        ) from None
