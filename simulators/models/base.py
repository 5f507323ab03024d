"""What every model shares: the tick it is stepped with, its base class, and sensor noise."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from simulators.plant import SensorInfo

MS_PER_S = 1000
SECONDS_PER_DAY = 86_400.0

# Decimals a device reports in, by unit: enough to see the noise, no more.
DECIMALS = {
    "ppm": 1, "%LEL": 1, "%VOL": 2, "MPa": 4, "kPa": 3, "m3/h": 1, "%": 2, "m/min": 3,
    "mm": 1, "kV/m": 3, "km": 2, "degC": 2, "m": 3, "m3": 1, "state": 0, "code": 0,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tick:
    """The virtual time a model is stepped to."""

    t_ms: int  # epoch milliseconds
    offset_s: float  # seconds since the simulation started (scenario time)
    dt_s: float  # length of the tick just ended

    def local_hour(self, utc_offset_s: float) -> float:
        return ((self.t_ms / MS_PER_S + utc_offset_s) % SECONDS_PER_DAY) / 3600.0


@dataclass(frozen=True, slots=True)
class Flash:
    """An event-stream reading produced inside a tick (a lightning flash)."""

    ts_ms: int
    key: str
    value: float


class Model(ABC):
    """A physical process owning the sensors in `keys`."""

    keys: tuple[str, ...]

    @abstractmethod
    def step(self, tick: Tick) -> None:
        """Advance the physics to tick.t_ms (tick.dt_s after the previous step)."""

    @abstractmethod
    def sample(self, key: str) -> float:
        """What sensor `key` reads now, with its measurement noise (may draw randomness)."""

    def events(self) -> list[Flash]:
        """Event-stream readings that happened during the last step, in time order."""
        return []


class OrnsteinUhlenbeck:
    """Mean-reverting noise (slow drift, wander): exact discretisation for any step."""

    def __init__(self, rng: np.random.Generator, *, sigma: float, tau_s: float) -> None:
        self._rng = rng
        self.sigma = sigma
        self.tau_s = tau_s
        self.x = sigma * float(rng.standard_normal())  # start in the stationary distribution

    def step(self, dt_s: float) -> float:
        a = math.exp(-dt_s / self.tau_s)
        self.x = self.x * a + self.sigma * math.sqrt(1.0 - a * a) * float(
            self._rng.standard_normal()
        )
        return self.x


class Lag:
    """A first-order response (a detector's T90, a tank's thermal inertia)."""

    def __init__(self, tau_s: float, value: float = 0.0) -> None:
        self.tau_s = tau_s
        self.y = value

    def step(self, target: float, dt_s: float) -> float:
        self.y += (target - self.y) * (1.0 - math.exp(-dt_s / self.tau_s))
        return self.y


class Instrument:
    """A sensor's own imperfections: a slow zero drift and white noise per reading, absolute
    (`noise`, in the sensor's unit) and relative to the value (`relative`, a meter's 0.05 %)."""

    def __init__(
        self,
        info: SensorInfo,
        rng: np.random.Generator,
        *,
        noise: float,
        relative: float = 0.0,
        drift: float = 0.0,
        drift_tau_s: float = 3600.0,
    ) -> None:
        self.info = info
        self._rng = rng
        self.noise = noise
        self.relative = relative
        self._drift = OrnsteinUhlenbeck(rng, sigma=drift, tau_s=drift_tau_s) if drift else None

    def step(self, dt_s: float) -> None:
        if self._drift is not None:
            self._drift.step(dt_s)

    def read(self, true_value: float) -> float:
        drift = self._drift.x if self._drift is not None else 0.0
        sigma = self.noise + self.relative * abs(true_value)
        return true_value + drift + sigma * float(self._rng.standard_normal())


def daily_demand(local_hour: float, *, city: bool) -> float:
    """Gas demand relative to the daily mean: a city's morning and evening peaks and night low,
    or a steel works' flatter three-shift day."""
    if city:
        bumps = (
            0.30 * _bump(local_hour, 7.5, 1.5)
            + 0.40 * _bump(local_hour, 18.5, 2.0)
            - 0.45 * _bump(local_hour, 3.0, 2.5)
        )
        return 1.0 + bumps - 0.03
    return 1.0 + 0.06 * math.sin(2 * math.pi * (local_hour - 10.0) / 24.0)


def _bump(hour: float, centre: float, width: float) -> float:
    d = (hour - centre + 12.0) % 24.0 - 12.0  # wrap around midnight
    return math.exp(-0.5 * (d / width) ** 2)


def rise_hold_decay(
    offset_s: float, at_s: float, end_s: float, rise_s: float, decay_s: float
) -> float:
    """0..1: a linear rise from at_s over rise_s, held to end_s, then an exponential decay."""
    if offset_s < at_s:
        return 0.0
    if offset_s < end_s:
        return min(1.0, (offset_s - at_s) / rise_s)
    peak = min(1.0, (end_s - at_s) / rise_s)
    return peak * math.exp(-(offset_s - end_s) / decay_s)
