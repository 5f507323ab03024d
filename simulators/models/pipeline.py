"""Gas pipelines: a main with a chain of pressure stations, and regulator stations.

A station chain is the devices of one asset that meter `flow_in` and/or `flow_out`, in registry
order: segment k runs from the k-th station to the next. Gas enters at the first station with a
daily demand cycle, every intermediate station takes off a share, and the last takes the rest,
so a station's `flow_out` equals the next one's `flow_in` within the meters' noise (~0.035 % each).
Pressure falls along the main with the square of the flow.

A leak on segment k draws its extra flow through every meter upstream of it: the upstream
`flow_out` rises, the downstream `flow_in` does not (the flow imbalance), and the pressure drops
downstream of the leak (half as much at the station just upstream, less further up).

A regulator station holds its outlet pressure at the set point with a little droop as its flow
follows the city's demand; a leak behind it raises its flow and pulls its pressure down.
"""

from __future__ import annotations

import numpy as np

from simulators.models.base import Instrument, Lag, Model, OrnsteinUhlenbeck, Tick, daily_demand
from simulators.plant import FLOW_CHANNELS, PIPE_PRESSURE_KINDS, DeviceInfo, SensorInfo
from simulators.rng import Streams
from simulators.scenario import Leak

METER_NOISE = 0.00035  # relative, per reading: two meters agree within ~0.25 %
DESIGN_SHARE_OF_RANGE = 0.3  # without a flow_m3h param, the mean flow is 30 % of the range


def design_pressure(info: SensorInfo) -> float:
    for name in ("design_kpa", "setpoint_mpa"):
        if name in info.params:
            return info.params[name]
    return info.range_min + 0.5 * info.span


def _progress(leak: Leak, offset_s: float) -> float:
    if not leak.active(offset_s):
        return 0.0
    if leak.ramp_s == 0:
        return 1.0
    return min(1.0, (offset_s - leak.at_s) / leak.ramp_s)


class StationChain(Model):
    def __init__(
        self,
        asset: str,
        stations: list[DeviceInfo],
        streams: Streams,
        *,
        flow_m3h: float | None,
        leaks: list[Leak],
        utc_offset_s: float,
    ) -> None:
        rng = streams.get("pipeline", asset)
        self._asset = asset
        self._stations = stations
        self._leaks = leaks
        self._utc_offset_s = utc_offset_s
        sensors = [s for d in stations for s in d.sensors if s.asset == asset]
        self.keys = tuple(
            s.key for s in sensors if s.channel in FLOW_CHANNELS or s.kind in PIPE_PRESSURE_KINDS
        )
        self._where = {s.key: (i, s) for i, d in enumerate(stations) for s in d.sensors}
        first_flow = next(s for s in sensors if s.channel in FLOW_CHANNELS)
        q = flow_m3h or DESIGN_SHARE_OF_RANGE * first_flow.range_max
        n = len(stations)
        offtakes = [0.0] + [float(rng.uniform(0.05, 0.15)) for _ in range(n - 2)]
        self._mean_flow = []  # per segment, m3/h
        for k in range(n - 1):
            q *= 1.0 - offtakes[k]
            self._mean_flow.append(q)
        friction = np.array(self._mean_flow) ** 2
        self._friction_share = np.concatenate([[0.0], np.cumsum(friction) / friction.sum()])
        # Demand wanders smoothly (consumers do not jump within a second): a slow random
        # process through a two-minute lag, so meters read a second apart still agree.
        self._demand = OrnsteinUhlenbeck(rng, sigma=0.02, tau_s=600.0)
        self._smooth = Lag(120.0, self._demand.x)
        self._instruments = {
            s.key: self._instrument(s, streams.get("sensor", s.key))
            for s in sensors
            if s.key in self.keys
        }
        self._flow = [0.0] * (n - 1)  # segment flows now, including leaks
        self._arriving = [0.0] * (n - 1)  # what reaches the downstream station
        self._pressure = [0.0] * n

    @staticmethod
    def _instrument(s: SensorInfo, rng: np.random.Generator) -> Instrument:
        if s.channel in FLOW_CHANNELS:
            return Instrument(s, rng, noise=0.0, relative=METER_NOISE)
        return Instrument(s, rng, noise=0.001 * design_pressure(s))

    def step(self, tick: Tick) -> None:
        demand = daily_demand(tick.local_hour(self._utc_offset_s), city=False)
        demand *= 1.0 + self._smooth.step(self._demand.step(tick.dt_s), tick.dt_s)
        n = len(self._stations)
        flow = [q * demand for q in self._mean_flow]
        arriving = list(flow)
        drop = [0.0] * n  # fraction of design
        for leak in self._leaks:
            if leak.segment is None:
                continue
            s = leak.segment - 1
            p = _progress(leak, tick.offset_s)
            lost = leak.leak_pct / 100.0 * flow[s] * p
            for k in range(s + 1):
                flow[k] += lost
                arriving[k] += lost if k < s else 0.0
            for i in range(n):
                share = 1.0 if i > s else 0.5 ** (s - i + 1)
                drop[i] += leak.pressure_drop_pct / 100.0 * share * p
        self._flow, self._arriving = flow, arriving
        for i in range(n):
            friction = 0.03 * float(self._friction_share[i]) * demand * demand
            self._pressure[i] = 1.015 - friction - drop[i]
        for instrument in self._instruments.values():
            instrument.step(tick.dt_s)

    def sample(self, key: str) -> float:
        i, info = self._where[key]
        instrument = self._instruments[key]
        if info.channel == "flow_out":
            true = self._flow[i] if i < len(self._flow) else 0.0
        elif info.channel == "flow_in":
            true = self._arriving[i - 1] if i > 0 else self._flow[0]
        else:
            true = self._pressure[i] * design_pressure(info)
        return instrument.read(true)


class RegulatorStation(Model):
    def __init__(
        self,
        device: DeviceInfo,
        sensors: list[SensorInfo],
        streams: Streams,
        *,
        leaks: list[Leak],
        utc_offset_s: float,
    ) -> None:
        self.keys = tuple(s.key for s in sensors)
        rng = streams.get("regulator", device.key)
        self._kind = {s.key: s for s in sensors}
        self._leaks = [leak for leak in leaks if leak.device == device.key]
        self._utc_offset_s = utc_offset_s
        share = float(rng.uniform(0.7, 1.3))
        self._base_flow = {
            s.key: DESIGN_SHARE_OF_RANGE * s.range_max * share for s in sensors if s.kind == "flow"
        }
        self._demand_noise = OrnsteinUhlenbeck(rng, sigma=0.03, tau_s=600.0)
        self._smooth = Lag(120.0, self._demand_noise.x)
        self._instruments = {
            s.key: self._instrument(s, streams.get("sensor", s.key)) for s in sensors
        }
        self._demand = 1.0
        self._leak = 0.0
        self._drop = 0.0

    @staticmethod
    def _instrument(s: SensorInfo, rng: np.random.Generator) -> Instrument:
        if s.kind in PIPE_PRESSURE_KINDS:
            design = design_pressure(s)
            return Instrument(s, rng, noise=0.002 * design, drift=0.002 * design)
        return Instrument(s, rng, noise=0.0, relative=METER_NOISE)

    def step(self, tick: Tick) -> None:
        self._demand = daily_demand(tick.local_hour(self._utc_offset_s), city=True)
        wander = self._smooth.step(self._demand_noise.step(tick.dt_s), tick.dt_s)
        self._demand *= 1.0 + wander
        self._leak = self._drop = 0.0
        for leak in self._leaks:
            p = _progress(leak, tick.offset_s)
            self._leak += leak.leak_pct / 100.0 * p
            self._drop += leak.pressure_drop_pct / 100.0 * p
        for instrument in self._instruments.values():
            instrument.step(tick.dt_s)

    def sample(self, key: str) -> float:
        info = self._kind[key]
        instrument = self._instruments[key]
        if info.kind == "flow":
            base = self._base_flow[key]
            return instrument.read(base * (self._demand + self._leak))
        droop = 0.01 * (self._demand - 1.0)
        return instrument.read(design_pressure(info) * (1.0 - droop - self._drop))
