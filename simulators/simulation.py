"""The simulated plant on a virtual clock: readings per device, and each device's state.

    sim = Simulation(registry, seed=7, start_ms=..., scenario=load_scenario("demo"))
    for reading in sim.advance_to(sim.start_ms + 60_000):   # the first virtual minute
        ...                                                 # DeviceReading, in time order
    sim.device_state("gh1-co-n")                            # what a Modbus server shows now

Time moves in fixed ticks (`tick_ms`, 1 s by default). Entering a tick steps every model to the
tick's start, then computes every reading due before the next tick: each device samples its
channels every `period_s` (scaled by `period_scale`) from a seeded phase, and event streams
(lightning flashes) report when they happen. Readings are released once the caller's time
reaches their timestamp. Everything that is computed depends only on the seed, the scenario,
the start time, the tick and the period scale: how the caller slices time changes nothing.

`seq` counts the readings a device actually produced (from 1): a dropout leaves no gap, so a
gap seen downstream is a reading lost in transit.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import zoneinfo
from collections import deque
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

from hazwatch.registry.model import RegistryFile
from simulators.faults import Outcome, SensorEvent, SensorFaults, events_for
from simulators.models.base import MS_PER_S, Model, Tick
from simulators.models.gas import Exposure, GasDetector, detector_alarms
from simulators.models.holder import GasHolder
from simulators.models.lightning import LightningStation
from simulators.models.pipeline import RegulatorStation, StationChain
from simulators.models.steady import TANK_KINDS, Steady, Tank, tank_group
from simulators.plant import (
    GAS_KINDS,
    HOLDER_KINDS,
    LIGHTNING_KINDS,
    OUTPUT_KINDS,
    PIPE_PRESSURE_KINDS,
    DeviceInfo,
    Plant,
    SensorInfo,
)
from simulators.rng import Streams
from simulators.scenario import (
    QUIET,
    SENSOR_FAULTS,
    Bleed,
    Dropout,
    Fault,
    Leak,
    Plume,
    Scenario,
    Storm,
    check_targets,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One device's readings at one instant: the `values` of a telemetry message.

    `values` maps channel to value (None: the detector reports a fault and has no value);
    `quality` holds only channels whose quality is not GOOD (0)."""

    site: str
    device: str
    ts_ms: int
    values: Mapping[str, float | None]
    quality: Mapping[str, int]
    seq: int


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A detector's own view of itself, for a Modbus server's status registers.

    Midas-like: 40001 bits 4-5 = fault, bit 6 = low alarm, bit 7 = high alarm, 40006 = fault
    number. YA-K300-like: reg 1 = `state`, reg 2 = `alarm_level`."""

    online: bool  # False while the whole device is silent (dropout/silence): do not answer
    link_down: bool  # an MQTT device's connection is dropped (dropout with disconnect)
    fault: bool
    fault_code: int
    low_alarm: bool
    high_alarm: bool

    @property
    def state(self) -> int:
        """0 normal, 1 alarm, 2 fault."""
        if self.fault:
            return 2
        return 1 if (self.low_alarm or self.high_alarm) else 0

    @property
    def alarm_level(self) -> int:
        """0 none, 1 low, 2 high."""
        if self.high_alarm:
            return 2
        return 1 if self.low_alarm else 0


HEALTHY = DeviceStatus(True, False, False, 0, False, False)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """A device's latest readings (whether or not they were published) and its status."""

    device: str
    ts_ms: int | None  # time of the latest sample; None before the first
    values: Mapping[str, float | None]
    quality: Mapping[str, int]
    status: DeviceStatus


@dataclass(slots=True)
class _Schedule:
    device: DeviceInfo
    index: int
    periods_ms: dict[str, int]  # periodic channels only
    next_ms: dict[str, int]
    seq: int = 0
    values: dict[str, float | None] = field(default_factory=dict)
    quality: dict[str, int] = field(default_factory=dict)
    last_ms: int | None = None
    gas_value: float | None = None
    gas_kind: str | None = None
    status: DeviceStatus = HEALTHY


class Simulation:
    """A seeded, deterministic simulation of every sensor in a registry."""

    def __init__(
        self,
        registry: RegistryFile | Plant,
        *,
        seed: int,
        start_ms: int,
        scenario: Scenario | None = None,
        tick_ms: int = 1000,
        period_scale: float = 1.0,
        devices: Collection[str] | None = None,
    ) -> None:
        if tick_ms < 1:
            raise ValueError(f"tick_ms must be at least 1, got {tick_ms}")
        if not period_scale > 0 or not math.isfinite(period_scale):
            raise ValueError(f"period_scale must be a positive number, got {period_scale}")
        self.plant = registry if isinstance(registry, Plant) else Plant.from_registry(registry)
        self.scenario = scenario or QUIET
        check_targets(self.scenario, self.plant, source=f"scenario {self.scenario.name}")
        unknown = sorted(set(devices or ()) - set(self.plant.devices))
        if unknown:
            raise ValueError(f"unknown devices: {', '.join(unknown)}")
        self.seed = seed
        self.start_ms = start_ms
        self.tick_ms = tick_ms
        self.period_scale = period_scale
        self.selected = tuple(d for d in self.plant.devices if devices is None or d in devices)
        self._streams = Streams(seed)
        self._utc_offset = {
            site: _utc_offset_s(self.plant, site, start_ms) for site in self.plant.sites
        }
        self._models: list[Model] = []
        self._owner: dict[str, Model] = {}
        self._build_models()
        events: list[SensorEvent] = [
            e for e in self.scenario.events if isinstance(e, SENSOR_FAULTS)
        ]
        self._faults = {
            key: SensorFaults(info, events_for(info, events), self._streams.get("faults", key))
            for key, info in self.plant.sensors.items()
        }
        self._device_events = {
            d: [e for e in events if isinstance(e, Dropout | Fault) and d in e.devices]
            for d in self.plant.devices
        }
        self._schedules = {d: self._schedule(i, d) for i, d in enumerate(self.selected)}
        self._ticks = 0  # ticks entered
        self._pending: deque[DeviceReading] = deque()
        self.now_ms = start_ms - 1  # nothing has happened yet

    # Public API --------------------------------------------------------------------------

    @property
    def next_tick_ms(self) -> int:
        return self.start_ms + self._ticks * self.tick_ms

    def next_due_ms(self) -> int | None:
        """The time of the next reading, or of the next tick when none is computed yet (never
        None: a simulation does not run out)."""
        return self._pending[0].ts_ms if self._pending else self.next_tick_ms

    def advance_to(self, t_ms: int) -> list[DeviceReading]:
        """Move virtual time to t_ms; the readings with ts_ms <= t_ms not returned before."""
        while self.next_tick_ms <= t_ms:
            self._enter_tick()
        self.now_ms = max(self.now_ms, t_ms)
        out = []
        while self._pending and self._pending[0].ts_ms <= t_ms:
            out.append(self._pending.popleft())
        return out

    def run(self, duration_ms: int, *, step_ms: int = 60_000) -> Iterator[DeviceReading]:
        """Every reading from the start for duration_ms, as fast as the machine goes."""
        end = self.start_ms + duration_ms
        t = self.start_ms
        while t < end:
            t = min(t + step_ms, end)
            yield from self.advance_to(t - 1)

    def device_state(self, device: str) -> DeviceState:
        """Device `device` as of the latest tick entered (call advance_to(t) first)."""
        try:
            s = self._schedules[device]
        except KeyError:
            raise KeyError(f"device {device!r} is not simulated in this run") from None
        return DeviceState(device, s.last_ms, dict(s.values), dict(s.quality), s.status)

    @property
    def device_sites(self) -> Mapping[str, str]:
        """The simulated (selected) devices and their sites, in registry order."""
        return {d: self.plant.devices[d].site for d in self.selected}

    def link_down(self, device: str) -> bool:
        """True while a dropout with `disconnect` holds the device's connection down."""
        return self._schedules[device].status.link_down

    def readings_per_s(self) -> float:
        """Periodic readings (sensor values) per virtual second over the selected devices."""
        return sum(1000.0 / p for s in self._schedules.values() for p in s.periods_ms.values())

    # Building ----------------------------------------------------------------------------

    def _add(self, model: Model) -> None:
        self._models.append(model)
        for key in model.keys:
            self._owner[key] = model

    def _build_models(self) -> None:
        plant, scenario, streams = self.plant, self.scenario, self._streams
        for asset in plant.assets.values():
            offset = self._utc_offset[asset.site]
            stations = plant.chain(asset.key)
            leaks = [e for e in scenario.of_kind(Leak) if e.asset == asset.key]
            if len(stations) >= 2:
                flow = asset.params.get("flow_m3h")
                self._add(
                    StationChain(
                        asset.key, stations, streams, flow_m3h=flow, leaks=leaks,
                        utc_offset_s=offset,
                    )
                )  # fmt: skip
            holder = [
                s
                for s in plant.sensors_of_asset(asset.key)
                if s.kind in HOLDER_KINDS and s.kind != "co_piston_top"
            ]
            if holder:
                bleeds = [e for e in scenario.of_kind(Bleed) if e.asset == asset.key]
                stroke = asset.params.get("stroke_m")
                self._add(
                    GasHolder(
                        asset.key, holder, streams, stroke_m=stroke, bleeds=bleeds,
                        utc_offset_s=offset,
                    )
                )  # fmt: skip
        for site in plant.sites:
            lightning = [
                s for s in plant.sensors.values() if s.site == site and s.kind in LIGHTNING_KINDS
            ]
            if lightning:
                storms = [e for e in scenario.of_kind(Storm) if self._storm_site(e) == site]
                self._add(LightningStation(site, lightning, streams, storms=storms))
        for device in plant.devices.values():
            self._build_device(device)

    def _storm_site(self, storm: Storm) -> str:
        if storm.site is not None:
            return storm.site
        assert storm.asset is not None
        return self.plant.assets[storm.asset].site

    def _build_device(self, device: DeviceInfo) -> None:
        scenario, streams = self.scenario, self._streams
        offset = self._utc_offset[device.site]
        free = [s for s in device.sensors if s.key not in self._owner]
        regulator = [s for s in free if s.kind in PIPE_PRESSURE_KINDS or s.kind == "flow"]
        if any(s.kind in PIPE_PRESSURE_KINDS for s in regulator):
            leaks = [e for e in scenario.of_kind(Leak) if e.device == device.key]
            self._add(
                RegulatorStation(device, regulator, streams, leaks=leaks, utc_offset_s=offset)
            )
        holder = [s for s in free if s.kind in HOLDER_KINDS and s.kind != "co_piston_top"]
        if holder:  # holder sensors outside any holder asset: one holder per device
            self._add(
                GasHolder(
                    device.key, holder, streams, stroke_m=None, bleeds=[], utc_offset_s=offset
                )
            )
        tanks: dict[str, list[SensorInfo]] = {}
        for s in free:
            if s.kind in TANK_KINDS:
                tanks.setdefault(tank_group(s), []).append(s)
        for name, group in tanks.items():
            self._add(Tank(name, group, streams, utc_offset_s=offset))
        for s in device.sensors:
            if s.key in self._owner:
                continue
            if s.kind in GAS_KINDS:
                self._add(GasDetector(s, streams, self._exposures(s)))
            else:
                self._add(Steady(s, streams, utc_offset_s=offset))

    def _exposures(self, info: SensorInfo) -> list[Exposure]:
        out = [
            Exposure.of(e)
            for e in self.scenario.of_kind(Plume)
            if info.key in e.sensors or info.device in e.devices
        ]
        if info.kind == "co_piston_top":
            out += [Exposure.of(e) for e in self.scenario.of_kind(Bleed) if e.asset == info.asset]
        return out

    def _schedule(self, index: int, key: str) -> _Schedule:
        device = self.plant.devices[key]
        periods = {
            s.channel: max(1, round(s.period_s * MS_PER_S * self.period_scale))
            for s in device.sensors
            if s.period_s is not None
        }
        phase = 0
        if periods:
            fraction = float(self._streams.get("phase", key).random())
            phase = int(fraction * min(periods.values()))
        gas = next((s for s in device.sensors if s.kind in GAS_KINDS), None)
        return _Schedule(
            device=device,
            index=index,
            periods_ms=periods,
            next_ms=dict.fromkeys(periods, self.start_ms + phase),
            gas_kind=gas.kind if gas is not None else None,
        )

    # Running -----------------------------------------------------------------------------

    def _enter_tick(self) -> None:
        t_ms = self.next_tick_ms
        tick = Tick(t_ms, (t_ms - self.start_ms) / MS_PER_S, self.tick_ms / MS_PER_S)
        self._ticks += 1
        for model in self._models:
            model.step(tick)
        end_ms = t_ms + self.tick_ms
        produced: list[tuple[int, int, str, dict[str, float]]] = []
        for key, sched in self._schedules.items():
            due: dict[int, list[str]] = {}
            for channel, period in sched.periods_ms.items():
                when = sched.next_ms[channel]
                while when < end_ms:
                    due.setdefault(when, []).append(channel)
                    when += period
                sched.next_ms[channel] = when
            for ts_ms in sorted(due):
                raw = {c: self._owner[f"{key}/{c}"].sample(f"{key}/{c}") for c in due[ts_ms]}
                produced.append((ts_ms, sched.index, key, raw))
        for model in self._models:
            for flash in model.events():
                device = self.plant.sensors[flash.key].device
                if device in self._schedules:
                    channel = self.plant.sensors[flash.key].channel
                    index = self._schedules[device].index
                    produced.append((flash.ts_ms, index, device, {channel: flash.value}))
        produced.sort(key=lambda p: (p[0], p[1]))
        for ts_ms, _, key, raw in produced:
            reading = self._report(self._schedules[key], ts_ms, raw)
            if reading is not None:
                self._pending.append(reading)

    def _report(self, sched: _Schedule, ts_ms: int, raw: dict[str, float]) -> DeviceReading | None:
        """Faults and the detector's own outputs turn raw values into a device's reading."""
        device = sched.device
        offset_s = (ts_ms - self.start_ms) / MS_PER_S
        outcomes: dict[str, Outcome] = {}
        for channel, value in raw.items():
            info = device.channel(channel)
            assert info is not None
            if info.kind in OUTPUT_KINDS and sched.gas_kind is not None:
                continue  # computed below, from the detector's gas reading
            outcomes[channel] = self._faults[info.key].report(offset_s, value)
        sched.status = self._status(sched, offset_s, outcomes)
        for channel in raw:
            if channel not in outcomes:
                info = device.channel(channel)
                assert info is not None
                output = self._output(info, sched.status)
                outcomes[channel] = self._faults[info.key].report(offset_s, output)
        for channel, outcome in outcomes.items():
            sched.values[channel] = outcome.value
            sched.quality[channel] = outcome.quality
        sched.last_ms = ts_ms
        emitted = {c: o for c, o in outcomes.items() if o.emitted}
        if not sched.status.online or not emitted:
            return None
        sched.seq += 1
        return DeviceReading(
            site=device.site,
            device=device.key,
            ts_ms=ts_ms,
            values={c: o.value for c, o in emitted.items()},
            quality={c: o.quality for c, o in emitted.items() if o.quality != 0},
            seq=sched.seq,
        )

    def _status(
        self, sched: _Schedule, offset_s: float, outcomes: dict[str, Outcome]
    ) -> DeviceStatus:
        device_events = [e for e in self._device_events[sched.device.key] if e.active(offset_s)]
        silent = [e for e in device_events if isinstance(e, Dropout)]
        fault_code = max(
            [0]
            + [o.fault_code for o in outcomes.values()]
            + [e.code for e in device_events if isinstance(e, Fault)]
        )
        if sched.gas_kind is not None:
            gas = next((o for c, o in outcomes.items() if self._is_gas(sched.device, c)), None)
            if gas is not None:
                sched.gas_value = gas.value
        low, high = (False, False)
        if fault_code == 0 and sched.gas_kind is not None:
            low, high = detector_alarms(sched.gas_kind, sched.gas_value)
        return DeviceStatus(
            online=not silent,
            link_down=any(e.disconnect for e in silent),
            fault=fault_code != 0,
            fault_code=fault_code,
            low_alarm=low,
            high_alarm=high,
        )

    @staticmethod
    def _is_gas(device: DeviceInfo, channel: str) -> bool:
        info = device.channel(channel)
        return info is not None and info.kind in GAS_KINDS

    @staticmethod
    def _output(info: SensorInfo, status: DeviceStatus) -> float:
        """A detector output channel's value: fault number, or alarm relay state."""
        if info.kind == "fault_code":
            return float(status.fault_code)
        if "low" in info.channel:
            return float(status.low_alarm)
        if "high" in info.channel:
            return float(status.high_alarm)
        if info.range_max >= 2:
            return float(status.alarm_level)
        return float(status.low_alarm or status.high_alarm)


def _utc_offset_s(plant: Plant, site: str, start_ms: int) -> float:
    name = plant.timezones.get(site, "UTC")
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        log.warning("unknown time zone %s of site %s: its daily cycles follow UTC", name, site)
        return 0.0
    when = dt.datetime.fromtimestamp(start_ms / MS_PER_S, tz=dt.UTC)
    offset = when.astimezone(zone).utcoffset()
    return offset.total_seconds() if offset is not None else 0.0
