"""Scenario files: timed events laid over normal operation, and the alarms they promise.

A scenario is YAML (docs/simulators.md has the full reference):

    name: leak
    description: A leak on the coal-gas main between stations 3 and 4.
    duration_s: 1200                 # suggested run length (the CLI's default --duration)
    events:
      - {kind: leak, at_s: 60, asset: coalgas-main, segment: 3, leak_pct: 7}
    expect:
      - {sensor: ps4/pressure, tier: orange, by_s: 150}

Every event starts `at_s` seconds after the simulation's start and lasts `duration_s` (absent:
to the end of the run). The process stories (storm, bleed, leak, plume, ramp) change the
physics; the faults (spike, stuck, drift, garbage, fault, dropout/silence) change what a sensor
reports; duplicate and reorder change how readings are published.

`expect` lists the tier crossings the scenario promises, checked against the catalogue's and
the registry's limits (`simulators.expectations`): `via: limit` (the value passes the tier's
limit and holds it for the on-delay), `via: stale` (no reading for the stale rule's time) or
`via: quality` (a reading with bad quality).

Loading checks the file against the schema (every problem with its line), then
`check_targets` checks that every device, sensor, asset and site it names is in the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hazwatch.errors import Problem, ScenarioError
from hazwatch.rulespec import TierField
from simulators.plant import GAS_KINDS, HOLDER_KINDS, Plant

PACKAGE_SCENARIOS = "simulators.scenarios"
E = TypeVar("E")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Event(_Model):
    at_s: float = Field(0.0, ge=0, description="start, seconds after the simulation start")
    duration_s: float | None = Field(None, gt=0, description="absent: to the end of the run")
    note: str | None = None

    def active(self, offset_s: float) -> bool:
        return self.at_s <= offset_s < self.end_s

    @property
    def end_s(self) -> float:
        return float("inf") if self.duration_s is None else self.at_s + self.duration_s


class _Targets(_Event):
    """An event aimed at sensors (`<device>/<channel>`) and/or whole devices."""

    sensors: tuple[str, ...] = ()
    devices: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _aimed(self) -> Self:
        if not self.sensors and not self.devices:
            raise ValueError("name at least one target in sensors or devices")
        return self

    def hits(self, sensor_key: str, device: str) -> bool:
        return sensor_key in self.sensors or device in self.devices


class _SensorTargets(_Event):
    sensors: tuple[str, ...] = Field(min_length=1)


# Process stories ---------------------------------------------------------------------------


class Storm(_Model):
    """A thunderstorm cell approaching a site's lightning station, passing over, and leaving.

    Its length is approach_s + dwell_s + depart_s; it has no duration_s."""

    kind: Literal["storm"]
    at_s: float = Field(0.0, ge=0)
    note: str | None = None
    site: str | None = None
    asset: str | None = None  # any asset of the site (e.g. its lightning station)
    start_km: float = Field(40.0, gt=0, le=300)
    closest_km: float = Field(2.0, gt=0, le=300)
    approach_s: float = Field(2400.0, gt=0)
    dwell_s: float = Field(600.0, ge=0)
    depart_s: float = Field(1800.0, gt=0)
    flash_rate_per_min: float = Field(4.0, ge=0, le=120)
    growth_s: float = Field(300.0, gt=0, description="the cell's flash rate builds up over this")
    cell_radius_km: float = Field(2.5, ge=0)
    peak_kv_m: float = Field(15.0, gt=0, le=45, description="|E| of the cell right overhead")
    field_scale_km: float = Field(4.0, gt=0, description="|E| halves at this distance")

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.site is None) == (self.asset is None):
            raise ValueError("a storm names exactly one of site or asset")
        if self.closest_km > self.start_km:
            raise ValueError(f"closest_km {self.closest_km} is beyond start_km {self.start_km}")
        return self

    @property
    def end_s(self) -> float:
        return self.at_s + self.approach_s + self.dwell_s + self.depart_s

    def distance_km(self, offset_s: float) -> float | None:
        """The cell's distance from the station, or None when there is no storm."""
        t = offset_s - self.at_s
        if t < 0 or offset_s >= self.end_s:
            return None
        far, near = self.start_km, self.closest_km
        if t < self.approach_s:
            return far + (near - far) * t / self.approach_s
        t -= self.approach_s
        if t < self.dwell_s:
            return near
        t -= self.dwell_s
        return near + (far - near) * t / self.depart_s

    def activity(self, offset_s: float) -> float:
        """Flash activity 0..1: the cell's flash rate builds up over growth_s and dies away over
        the last third of its departure."""
        t = offset_s - self.at_s
        if t < 0 or offset_s >= self.end_s:
            return 0.0
        grow = min(1.0, t / self.growth_s)
        fade = min(1.0, (self.end_s - offset_s) / max(1.0, self.depart_s / 3))
        return grow * fade


class Bleed(_Event):
    """An emergency bleed of a gas holder: the piston runs down, the internal pressure dips, and
    CO on the piston top rises fast (GB 6222 practice)."""

    kind: Literal["bleed"]
    asset: str
    co_peak_ppm: float = Field(320.0, gt=0, le=1000)
    rise_s: float = Field(180.0, gt=0)
    decay_s: float = Field(240.0, gt=0)
    speed_m_per_min: float = Field(0.8, ge=0, le=10)
    pressure_dip_pct: float = Field(1.5, ge=0, le=50)


class Leak(_Event):
    """A leak on a pipeline: on a station chain (`segment` k lies between the k-th and the
    (k+1)-th station) the upstream meter sees the leak's extra flow, the downstream one does
    not, and pressures downstream fall; on a regulator station (`device`) its outlet pressure
    falls and its flow rises."""

    kind: Literal["leak"]
    asset: str
    segment: int | None = Field(None, ge=1)
    device: str | None = None
    leak_pct: float = Field(6.0, gt=0, le=100, description="% of the segment's throughput")
    pressure_drop_pct: float = Field(6.0, ge=0, le=100, description="% of design, downstream")
    ramp_s: float = Field(30.0, ge=0)

    @model_validator(mode="after")
    def _where(self) -> Self:
        if (self.segment is None) == (self.device is None):
            raise ValueError("a leak names exactly one of segment (station chain) or device")
        return self


class Plume(_Targets):
    """Gas reaching detectors: the concentration near the heads rises to `peak` (sensor units)
    over rise_s, holds, and decays over decay_s after the event; each detector answers with its
    own ~30 s response."""

    kind: Literal["plume"]
    peak: float = Field(gt=0)
    rise_s: float = Field(60.0, gt=0)
    decay_s: float = Field(120.0, gt=0)


class Ramp(_SensorTargets):
    """A scripted process change: the sensor's true value moves to `to` over ramp_s, holds, and
    returns over ramp_s after the event (a tank filling, a temperature rising)."""

    kind: Literal["ramp"]
    to: float
    ramp_s: float = Field(60.0, ge=0)


# Faults ------------------------------------------------------------------------------------


class Spike(_SensorTargets):
    """`samples` readings from at_s on are off by `magnitude` (a single-sample glitch by
    default)."""

    kind: Literal["spike"]
    magnitude: float
    samples: int = Field(1, ge=1)


class Stuck(_SensorTargets):
    """The sensor repeats the value it had when the fault began."""

    kind: Literal["stuck"]


class Drift(_SensorTargets):
    """A calibration drift of `rate_per_min` units per minute, gone when the event ends."""

    kind: Literal["drift"]
    rate_per_min: float


class Garbage(_SensorTargets):
    """Readings replaced by out-of-range garbage: far above or below the range, NaN or inf."""

    kind: Literal["garbage"]
    mode: Literal["high", "low", "nan", "inf", "mixed"] = "mixed"
    probability: float = Field(1.0, gt=0, le=1)


class Fault(_Targets):
    """The detector reports a fault: its gas readings carry quality SENSOR_FAULT and no value,
    its fault-number channel reads `code`, its alarm outputs drop and its status shows fault."""

    kind: Literal["fault"]
    code: int = Field(1, ge=1, le=65535)


class Dropout(_Targets):
    """Sensors or whole devices go silent. With `disconnect`, an MQTT device also loses its
    connection (MQTT 5 disconnect with will: the broker publishes its `offline` status) and
    reconnects when the event ends; a Modbus device stops answering either way."""

    kind: Literal["dropout", "silence"]
    disconnect: bool = False


# Publishing faults -------------------------------------------------------------------------


class Duplicate(_Event):
    """Readings of the devices are published `copies` times (with `probability`)."""

    kind: Literal["duplicate"]
    devices: tuple[str, ...] = Field(min_length=1)
    copies: int = Field(2, ge=2, le=10)
    probability: float = Field(1.0, gt=0, le=1)


class Reorder(_Event):
    """Readings of the devices are held back up to max_delay_s (with `probability`), so they
    arrive after later ones."""

    kind: Literal["reorder"]
    devices: tuple[str, ...] = Field(min_length=1)
    probability: float = Field(0.5, gt=0, le=1)
    max_delay_s: float = Field(10.0, gt=0, le=3600)


Event = Annotated[
    Storm
    | Bleed
    | Leak
    | Plume
    | Ramp
    | Spike
    | Stuck
    | Drift
    | Garbage
    | Fault
    | Dropout
    | Duplicate
    | Reorder,
    Field(discriminator="kind"),
]
SENSOR_FAULTS = (Ramp, Spike, Stuck, Drift, Garbage, Fault, Dropout)


class Expectation(_Model):
    sensor: str
    tier: TierField
    by_s: float = Field(gt=0)
    via: Literal["limit", "stale", "quality"] = "limit"
    note: str | None = None


class Scenario(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: str = ""
    duration_s: float | None = Field(None, gt=0)
    events: tuple[Event, ...] = ()
    expect: tuple[Expectation, ...] = ()

    def of_kind(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


QUIET = Scenario(name="quiet", description="Normal operation only.")


# Loading -----------------------------------------------------------------------------------


def packaged_scenarios() -> list[str]:
    """Names of the scenarios shipped with HazWatch."""
    files = resources.files(PACKAGE_SCENARIOS).iterdir()
    return sorted(f.name.removesuffix(".yaml") for f in files if f.name.endswith(".yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A packaged scenario by name ("demo") or a scenario file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            problem = Problem("<file>", f"cannot read: {exc.strerror}")
            raise ScenarioError(str(path), [problem]) from exc
        return parse_scenario(text, source=str(path))
    name = str(name_or_path)
    if name not in packaged_scenarios():
        known = ", ".join(packaged_scenarios())
        raise ScenarioError(name, [Problem("<name>", f"no such scenario; packaged: {known}")])
    text = resources.files(PACKAGE_SCENARIOS).joinpath(f"{name}.yaml").read_text("utf-8")
    return parse_scenario(text, source=f"{name} (packaged)")


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ScenarioError(source, [Problem("<yaml>", str(exc).splitlines()[0], line)]) from exc
    if node is None:
        raise ScenarioError(source, [Problem("<file>", "the file is empty")])
    lines: dict[tuple[str | int, ...], int] = {}
    data = _plain(node, (), lines)
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            # Drop the discriminator tags pydantic puts into locations ("storm", ...).
            loc = error["loc"]
            path = tuple(p for i, p in enumerate(loc) if not _is_tag(loc, i))
            problems.append(
                Problem(
                    _format(path), error["msg"].removeprefix("Value error, "), _line(path, lines)
                )
            )
        raise ScenarioError(source, problems) from exc


def _is_tag(loc: tuple[int | str, ...], i: int) -> bool:
    return i >= 2 and loc[i - 2] == "events" and isinstance(loc[i - 1], int)


def _plain(node: yaml.Node, path: tuple[str | int, ...], lines: dict[Any, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return {str(k.value): _plain(v, (*path, str(k.value)), lines) for k, v in node.value}
    if isinstance(node, yaml.SequenceNode):
        return [_plain(v, (*path, i), lines) for i, v in enumerate(node.value)]
    return yaml.SafeLoader("").construct_object(node, deep=True)


def _line(path: tuple[str | int, ...], lines: dict[Any, int]) -> int | None:
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return None


def _format(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top>"


# Checking against the registry -------------------------------------------------------------


def check_targets(scenario: Scenario, plant: Plant, *, source: str = "<scenario>") -> None:
    """Raise ScenarioError listing every target the registry does not have."""
    problems = [Problem(path, message) for path, message in _target_problems(scenario, plant)]
    if problems:
        raise ScenarioError(source, problems)


def _target_problems(scenario: Scenario, plant: Plant) -> Iterator[tuple[str, str]]:
    for i, event in enumerate(scenario.events):
        where = f"events[{i}]"
        for sensor in getattr(event, "sensors", ()):
            if sensor not in plant.sensors:
                yield f"{where}.sensors", f"unknown sensor {sensor!r}"
        for device in getattr(event, "devices", ()):
            if device not in plant.devices:
                yield f"{where}.devices", f"unknown device {device!r}"
        yield from _story_problems(where, event, plant)
    for i, expect in enumerate(scenario.expect):
        known = expect.sensor in plant.sensors or expect.sensor in plant.derived
        if not known:
            yield f"expect[{i}].sensor", f"unknown sensor {expect.sensor!r}"


def _story_problems(where: str, event: object, plant: Plant) -> Iterator[tuple[str, str]]:
    if isinstance(event, Storm):
        if event.site is not None and event.site not in plant.sites:
            yield f"{where}.site", f"unknown site {event.site!r}"
        if event.asset is not None and event.asset not in plant.assets:
            yield f"{where}.asset", f"unknown asset {event.asset!r}"
    elif isinstance(event, Bleed):
        holder = [s for s in plant.sensors_of_asset(event.asset) if s.kind in HOLDER_KINDS]
        if not holder:
            yield f"{where}.asset", f"{event.asset!r} has no gas-holder sensors to bleed"
    elif isinstance(event, Leak):
        yield from _leak_problems(where, event, plant)
    elif isinstance(event, Plume):
        for key in event.sensors:
            if key in plant.sensors and plant.sensors[key].kind not in GAS_KINDS:
                yield f"{where}.sensors", f"plume target {key} is not a gas detector"
        for device in event.devices:
            info = plant.devices.get(device)
            if info is not None and not any(s.kind in GAS_KINDS for s in info.sensors):
                yield f"{where}.devices", f"plume target {device} has no gas detector"


def _leak_problems(where: str, event: Leak, plant: Plant) -> Iterator[tuple[str, str]]:
    if event.asset not in plant.assets:
        yield f"{where}.asset", f"unknown asset {event.asset!r}"
        return
    if event.segment is not None:
        stations = plant.chain(event.asset)
        if len(stations) < 2:
            yield f"{where}.segment", f"{event.asset!r} has no station chain (flow_in/flow_out)"
        elif event.segment >= len(stations):
            yield (
                f"{where}.segment",
                f"{event.asset!r} has {len(stations) - 1} segments; {event.segment} is not one",
            )
    if event.device is not None and event.device not in plant.devices:
        yield f"{where}.device", f"unknown device {event.device!r}"
