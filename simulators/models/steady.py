"""Processes that change slowly: major-hazard tanks, ambient temperature, and every sensor kind
without a richer model (held near a plausible value with noise).

Tank channels are grouped by the prefix before their first underscore (`t1_level`, `t1_temp`,
`t1_pressure` are one tank): the temperature follows the day's ambient with hours of lag, and
an LPG tank's pressure follows its temperature (vapour pressure, about 0.55 MPa gauge at 15 °C,
+0.015 MPa per °C).
"""

from __future__ import annotations

import math

from simulators.models.base import Instrument, Lag, Model, OrnsteinUhlenbeck, Tick, daily_demand
from simulators.plant import SensorInfo
from simulators.rng import Streams

AMBIENT_MEAN_C = 12.0
AMBIENT_SWING_C = 6.0  # half the day's range; warmest at 15:00
TANK_THERMAL_TAU_S = 3 * 3600.0
LPG_KPA_AT_15C = 550.0
LPG_KPA_PER_C = 15.0
TANK_KINDS = frozenset({"tank_level", "tank_temperature", "tank_pressure", "temperature"})


def ambient_c(local_hour: float) -> float:
    return AMBIENT_MEAN_C + AMBIENT_SWING_C * math.sin(2 * math.pi * (local_hour - 9.0) / 24.0)


def tank_group(info: SensorInfo) -> str:
    head, sep, _ = info.channel.partition("_")
    return f"{info.device}/{head}" if sep else info.device


class Tank(Model):
    """One tank's level, temperature and pressure (any of them may be missing)."""

    def __init__(
        self, name: str, sensors: list[SensorInfo], streams: Streams, *, utc_offset_s: float
    ) -> None:
        self.keys = tuple(s.key for s in sensors)
        rng = streams.get("tank", name)
        self._info = {s.key: s for s in sensors}
        self._utc_offset_s = utc_offset_s
        self._level0 = float(rng.uniform(40.0, 70.0))
        self._level = OrnsteinUhlenbeck(rng, sigma=3.0, tau_s=6 * 3600.0)
        self._offset_c = float(rng.uniform(-1.0, 1.0))
        self._thermal: Lag | None = None
        noise = {"tank_level": 0.05, "tank_temperature": 0.05, "temperature": 0.05}
        self._instruments = {
            s.key: Instrument(
                s, streams.get("sensor", s.key), noise=noise.get(s.kind, 0.0), relative=0.002
            )
            for s in sensors
        }
        self._ambient = AMBIENT_MEAN_C
        self.temperature_c = AMBIENT_MEAN_C
        self.level_pct = self._level0

    def step(self, tick: Tick) -> None:
        self._ambient = ambient_c(tick.local_hour(self._utc_offset_s))
        if self._thermal is None:  # start at the lag's equilibrium, not at a cold step
            self._thermal = Lag(TANK_THERMAL_TAU_S, _daily_mean_lagged(tick, self._utc_offset_s))
        self.temperature_c = self._thermal.step(self._ambient, tick.dt_s) + self._offset_c
        self.level_pct = self._level0 + self._level.step(tick.dt_s)
        for instrument in self._instruments.values():
            instrument.step(tick.dt_s)

    def sample(self, key: str) -> float:
        info = self._info[key]
        if info.kind == "tank_level":
            true = self.level_pct
        elif info.kind == "tank_pressure":
            kpa = LPG_KPA_AT_15C + LPG_KPA_PER_C * (self.temperature_c - 15.0)
            true = kpa if info.unit == "kPa" else kpa / 1000.0
        elif info.kind == "temperature":
            true = self._ambient
        else:
            true = self.temperature_c
        return self._instruments[key].read(true)


def _daily_mean_lagged(tick: Tick, utc_offset_s: float) -> float:
    """The lagged ambient temperature a tank has settled to at this hour of the day (a sine
    through a first-order lag: amplitude and phase shift)."""
    w = 2 * math.pi / 86_400.0
    gain = 1.0 / math.sqrt(1.0 + (w * TANK_THERMAL_TAU_S) ** 2)
    shift_h = math.atan(w * TANK_THERMAL_TAU_S) / w / 3600.0
    hour = tick.local_hour(utc_offset_s) - shift_h
    return AMBIENT_MEAN_C + gain * AMBIENT_SWING_C * math.sin(2 * math.pi * (hour - 9.0) / 24.0)


class Steady(Model):
    """A sensor with no richer model: near a plausible value for its kind, with noise."""

    def __init__(self, info: SensorInfo, streams: Streams, *, utc_offset_s: float) -> None:
        self.keys = (info.key,)
        rng = streams.get("sensor", info.key)
        self._info = info
        self._utc_offset_s = utc_offset_s
        self._centre = _centre(info)
        quiet = info.kind in ("detector_alarm", "fault_code")
        self._instrument = Instrument(
            info, rng, noise=0.0 if quiet else 0.002 * info.span, relative=0.0
        )
        self._demand = 1.0

    def step(self, tick: Tick) -> None:
        self._instrument.step(tick.dt_s)
        if self._info.kind == "flow":
            self._demand = daily_demand(tick.local_hour(self._utc_offset_s), city=True)

    def sample(self, key: str) -> float:
        return self._instrument.read(self._centre * self._demand)


def _centre(info: SensorInfo) -> float:
    p = info.params
    for name in ("design_kpa", "setpoint_mpa", "design_mm"):
        if name in p:
            return p[name]
    if info.kind in ("detector_alarm", "fault_code"):
        return 0.0
    if info.kind == "flow":
        return 0.3 * info.range_max
    return info.range_min + 0.3 * info.span
