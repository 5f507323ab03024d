"""Gas detectors: a kind's clean-air background with zero drift and noise, plus the gas that
reaches the head (leak plumes, the piston top during a bleed) seen through the detector's
~30 s response; and the detector's own alarm outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from simulators.models.base import Instrument, Lag, Model, Tick, rise_hold_decay
from simulators.plant import SensorInfo
from simulators.rng import Streams
from simulators.scenario import Bleed, Plume

# GB/T 50493-2019: detectors respond within 30 s (T90); a first-order lag reaches 90 % of a
# step after ln(10) time constants.
T90_S = 30.0
TAU_S = T90_S / math.log(10.0)


@dataclass(frozen=True, slots=True)
class Background:
    mean: float  # clean air
    noise: float  # per reading
    drift: float  # slow zero drift (standard deviation)
    spread: float  # head-to-head difference of the clean-air reading


BACKGROUND = {
    "co": Background(4.0, 0.4, 0.7, 0.8),  # 2-6 ppm in a coal-gas area
    "co_piston_top": Background(3.0, 0.4, 0.7, 0.6),
    "combustible_gas": Background(0.6, 0.2, 0.25, 0.3),  # 0-2 %LEL
    "h2s": Background(0.3, 0.08, 0.1, 0.1),
    "ch4_manhole": Background(0.3, 0.08, 0.12, 0.15),
    "o2": Background(20.9, 0.04, 0.05, 0.05),
}

# A detector's own alarm set points (low, high) by kind: the values the devices ship with
# (YA-K300 25/50 %LEL; coal-gas plants alarm at 24 and 160 ppm CO).
DETECTOR_SETPOINTS = {
    "co": (24.0, 160.0),
    "co_piston_top": (24.0, 160.0),
    "combustible_gas": (25.0, 50.0),
    "h2s": (7.0, 14.0),
    "ch4_manhole": (20.0, 35.0),
}


@dataclass(frozen=True, slots=True)
class Exposure:
    """Gas reaching a head over time: a plume, or the piston top during a bleed."""

    peak: float
    at_s: float
    end_s: float
    rise_s: float
    decay_s: float

    @classmethod
    def of(cls, event: Plume | Bleed) -> Exposure:
        peak = event.peak if isinstance(event, Plume) else event.co_peak_ppm
        return cls(peak, event.at_s, event.end_s, event.rise_s, event.decay_s)

    def level(self, offset_s: float) -> float:
        return self.peak * rise_hold_decay(
            offset_s, self.at_s, self.end_s, self.rise_s, self.decay_s
        )


class GasDetector(Model):
    def __init__(self, info: SensorInfo, streams: Streams, exposures: list[Exposure]) -> None:
        self.keys = (info.key,)
        rng = streams.get("sensor", info.key)
        bg = BACKGROUND[info.kind]
        self._clean = bg.mean + bg.spread * float(rng.uniform(-1.0, 1.0))
        self._instrument = Instrument(info, rng, noise=bg.noise, drift=bg.drift)
        self._exposures = exposures
        self._head = Lag(TAU_S)
        self._true = self._clean
        self._o2 = info.kind == "o2"

    def step(self, tick: Tick) -> None:
        self._instrument.step(tick.dt_s)
        gas = sum(e.level(tick.offset_s) for e in self._exposures)
        seen = self._head.step(gas, tick.dt_s)
        # Gas displaces air: an oxygen head reads lower, every other head higher.
        self._true = self._clean - 0.209 * seen if self._o2 else self._clean + seen

    def sample(self, key: str) -> float:
        return self._instrument.read(self._true)


def detector_alarms(kind: str, value: float | None) -> tuple[bool, bool]:
    """(low alarm, high alarm) of a detector's own outputs for its reading (None: faulted)."""
    setpoints = DETECTOR_SETPOINTS.get(kind)
    if value is None or setpoints is None or not math.isfinite(value):
        return False, False
    low, high = setpoints
    return value >= low, value >= high
