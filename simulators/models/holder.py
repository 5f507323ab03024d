"""A dry (Wiggins) gas holder: the piston level integrates the net gas flow, the piston speed
is that level's rate times the stroke, the tilt wanders by tens of millimetres and grows with
speed, and the internal pressure, set by the piston's weight, stays within about 1 % of design.

An emergency bleed opens the bleed valve: the piston runs down at the bleed speed and the
pressure dips (the CO that rises on the piston top is the `gas` model's job).
"""

from __future__ import annotations

import math

from simulators.models.base import Instrument, Lag, Model, OrnsteinUhlenbeck, Tick
from simulators.plant import SensorInfo
from simulators.rng import Streams
from simulators.scenario import Bleed

DEFAULT_STROKE_M = 50.0
LEVEL_SET_PCT = 50.0  # the dispatcher keeps the holder near half full
LEVEL_RESTORE_MIN = 120.0  # ... over about two hours
LEVEL_STOPS = (2.0, 98.0)  # the piston's mechanical stops, % of stroke
BLEED_OPEN_S = 20.0  # the bleed valve's travel time


class GasHolder(Model):
    def __init__(
        self,
        name: str,
        sensors: list[SensorInfo],
        streams: Streams,
        *,
        stroke_m: float | None,
        bleeds: list[Bleed],
        utc_offset_s: float,
    ) -> None:
        self.keys = tuple(s.key for s in sensors)
        rng = streams.get("holder", name)
        self._kind = {s.key: s.kind for s in sensors}
        self._stroke_m = stroke_m or DEFAULT_STROKE_M
        self._bleeds = bleeds
        self._utc_offset_s = utc_offset_s
        self._design_kpa = _param(sensors, "holder_pressure", "design_kpa", 3.0)
        self._allowable_mm = _param(sensors, "piston_tilt", "design_allowable_mm", 100.0)
        self._max_speed = _param(sensors, "piston_speed", "design_max_m_per_min", 2.0)

        self.level_pct = float(rng.uniform(40.0, 60.0))
        self.speed_m_per_min = 0.0
        self.pressure_kpa = self._design_kpa
        self.tilt_mm = 0.0
        self._dispatch = OrnsteinUhlenbeck(rng, sigma=0.2, tau_s=900.0)  # %/min
        self._pressure_wander = OrnsteinUhlenbeck(rng, sigma=0.003, tau_s=600.0)
        self._tilt_base = self._allowable_mm * float(rng.uniform(0.12, 0.25))
        self._tilt_wander = OrnsteinUhlenbeck(rng, sigma=0.03 * self._allowable_mm, tau_s=1800.0)
        self._speed_filter = Lag(10.0)
        noise = {
            "holder_level": 0.02,
            "piston_speed": 0.01,
            "piston_tilt": 0.01 * self._allowable_mm,
            "holder_pressure": 0.002 * self._design_kpa,
        }
        self._instruments = {
            s.key: Instrument(s, streams.get("sensor", s.key), noise=noise.get(s.kind, 0.0))
            for s in sensors
        }

    def step(self, tick: Tick) -> None:
        dt_min = tick.dt_s / 60.0
        hour = tick.local_hour(self._utc_offset_s)
        daily = 0.08 * math.sin(2 * math.pi * (hour - 6.0) / 24.0)
        restore = -(self.level_pct - LEVEL_SET_PCT) / LEVEL_RESTORE_MIN
        rate = self._dispatch.step(tick.dt_s) + daily + restore  # % of stroke per minute
        bleed = self._bleeding(tick.offset_s)
        if bleed is not None:
            opened = min(1.0, (tick.offset_s - bleed.at_s) / BLEED_OPEN_S)
            rate -= opened * bleed.speed_m_per_min * 100.0 / self._stroke_m
        before = self.level_pct
        self.level_pct = min(max(before + rate * dt_min, LEVEL_STOPS[0]), LEVEL_STOPS[1])
        actual_rate = (self.level_pct - before) / dt_min if dt_min > 0 else 0.0
        self.speed_m_per_min = actual_rate * self._stroke_m / 100.0
        self._speed_filter.step(self.speed_m_per_min, tick.dt_s)

        dip = 0.0
        if bleed is not None:
            dip = bleed.pressure_dip_pct / 100.0 * min(1.0, (tick.offset_s - bleed.at_s) / 60.0)
        moving = 0.002 * self.speed_m_per_min / self._max_speed
        wander = self._pressure_wander.step(tick.dt_s)
        self.pressure_kpa = self._design_kpa * (1.0 + wander + moving - dip)

        sway = 0.1 * self._allowable_mm * abs(self.speed_m_per_min) / self._max_speed
        self.tilt_mm = abs(self._tilt_base + self._tilt_wander.step(tick.dt_s) + sway)

    def _bleeding(self, offset_s: float) -> Bleed | None:
        return next((b for b in self._bleeds if b.active(offset_s)), None)

    def sample(self, key: str) -> float:
        kind = self._kind[key]
        true = {
            "holder_level": self.level_pct,
            "piston_speed": self._speed_filter.y,
            "piston_tilt": self.tilt_mm,
            "holder_pressure": self.pressure_kpa,
        }[kind]
        value = self._instruments[key].read(true)
        return abs(value) if kind == "piston_tilt" else value


def _param(sensors: list[SensorInfo], kind: str, name: str, default: float) -> float:
    return next((s.params[name] for s in sensors if s.kind == kind and name in s.params), default)
