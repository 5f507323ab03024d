"""A site's lightning station: atmospheric electric field mills and the lightning-location feed.

Fair weather: a small positive field, 0.05-0.25 kV/m. A storm cell (scenario `storm`) brings a
negative field whose magnitude grows as the cell approaches, |E| = peak / (1 + (d/d0)^2): with
the defaults it passes 2 kV/m near 10 km and 8 kV/m near 4 km. Cloud-to-ground flashes come as
a Poisson stream at the cell's flash rate, each at the cell's distance plus a scatter over the
cell's radius; every flash is reported once by the location feed (an event stream), and moves
the field sharply positive, a polarity reversal of several kV/m for a nearby flash, which then
recovers over a few seconds.
"""

from __future__ import annotations

import math

import numpy as np

from simulators.models.base import MS_PER_S, Flash, Instrument, Model, OrnsteinUhlenbeck, Tick
from simulators.plant import SensorInfo
from simulators.rng import Streams
from simulators.scenario import Storm

FAIR_WEATHER_KV_M = (0.05, 0.25)
RECOVERY_TAU_S = 4.0  # the field recharges after a flash
MIN_FLASH_KM = 0.1
# A flash discharges the cell: the field swings positive by this times the cell's field at the
# flash's distance (a flash at 5 km reverses about -6 kV/m to +3.5 kV/m).
FLASH_DISCHARGE = 1.6


class LightningStation(Model):
    def __init__(
        self, site: str, sensors: list[SensorInfo], streams: Streams, *, storms: list[Storm]
    ) -> None:
        rng = streams.get("lightning", site)
        self.keys = tuple(s.key for s in sensors if s.kind == "electric_field")
        self._locators = tuple(s.key for s in sensors if s.kind == "lightning_distance")
        self._rng = rng
        self._storms = storms
        self._fair = OrnsteinUhlenbeck(rng, sigma=0.03, tau_s=900.0)
        self._cell_wobble = OrnsteinUhlenbeck(rng, sigma=0.12, tau_s=30.0)
        self._instruments = {
            s.key: Instrument(s, streams.get("sensor", s.key), noise=0.01, relative=0.02)
            for s in sensors
            if s.kind == "electric_field"
        }
        self.field_kv_m = 0.14
        self.storm_km: float | None = None
        self._jump = 0.0  # the field change of recent flashes, recovering
        self._jump_at_ms = 0
        self._pending: list[tuple[int, float]] = []  # flashes of this tick: (ts_ms, kV/m jump)
        self._events: list[Flash] = []

    def step(self, tick: Tick) -> None:
        for instrument in self._instruments.values():
            instrument.step(tick.dt_s)
        # Flashes drawn for the tick that just ended move the field from now on.
        self._jump *= math.exp(-(tick.t_ms - self._jump_at_ms) / MS_PER_S / RECOVERY_TAU_S)
        for ts_ms, jump in self._pending:
            self._jump += jump * math.exp(-(tick.t_ms - ts_ms) / MS_PER_S / RECOVERY_TAU_S)
        self._jump_at_ms = tick.t_ms
        self._pending = []

        utc_hour = (tick.t_ms / MS_PER_S % 86_400.0) / 3600.0
        carnegie = 1.0 + 0.15 * math.sin(2 * math.pi * (utc_hour - 13.0) / 24.0)
        fair = min(max(0.14 * carnegie + self._fair.step(tick.dt_s), 0.07), 0.22)
        wobble = self._cell_wobble.step(tick.dt_s)

        storm, distance = self._nearest_storm(tick.offset_s)
        self.storm_km = distance
        cell = 0.0
        if storm is not None and distance is not None:
            cell = -_cell_field(storm, distance) * (1.0 + wobble)
        self.field_kv_m = fair + cell + self._jump
        self._events = self._draw_flashes(tick, storm, distance)

    def _nearest_storm(self, offset_s: float) -> tuple[Storm | None, float | None]:
        best: tuple[Storm | None, float | None] = (None, None)
        for storm in self._storms:
            d = storm.distance_km(offset_s)
            if d is not None and (best[1] is None or d < best[1]):
                best = (storm, d)
        return best

    def _draw_flashes(self, tick: Tick, storm: Storm | None, distance: float | None) -> list[Flash]:
        if storm is None or distance is None:
            return []
        rate_per_s = storm.flash_rate_per_min / 60.0 * storm.activity(tick.offset_s)
        count = int(self._rng.poisson(rate_per_s * tick.dt_s))
        if count == 0:
            return []
        tick_ms = round(tick.dt_s * MS_PER_S)
        offsets = np.sort(self._rng.integers(0, tick_ms, size=count))
        scatter = self._rng.normal(0.0, storm.cell_radius_km, size=(count, 2))
        flashes: list[Flash] = []
        for offset, (dx, dy) in zip(offsets, scatter, strict=True):
            km = max(MIN_FLASH_KM, math.hypot(distance + dx, dy))
            ts_ms = tick.t_ms + int(offset)
            jump = FLASH_DISCHARGE * _cell_field(storm, km)
            self._pending.append((ts_ms, jump))
            flashes.extend(Flash(ts_ms, key, km) for key in self._locators)
        return flashes

    def events(self) -> list[Flash]:
        return self._events

    def sample(self, key: str) -> float:
        return self._instruments[key].read(self.field_kv_m)


def _cell_field(storm: Storm, distance_km: float) -> float:
    return storm.peak_kv_m / (1.0 + (distance_km / storm.field_scale_km) ** 2)
