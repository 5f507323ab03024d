"""Publishing faults: duplicate and out-of-order delivery of a device's readings.

`Delivery.feed` takes readings in time order, as the simulation produces them, and returns them
in the order they are to be published: a reading of a device under a `duplicate` event goes out
`copies` times in a row (same seq: a redelivery, which storage must absorb); a reading under a
`reorder` event may be held back for up to max_delay_s of virtual time and goes out after later
readings. Whether and how long is drawn from the device's own stream, so it is reproducible.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

import numpy as np

from simulators.models.base import MS_PER_S
from simulators.rng import Streams
from simulators.scenario import Duplicate, Reorder, Scenario
from simulators.simulation import DeviceReading


class Delivery:
    def __init__(self, scenario: Scenario, *, seed: int, start_ms: int) -> None:
        self._duplicates = scenario.of_kind(Duplicate)
        self._reorders = scenario.of_kind(Reorder)
        self._streams = Streams(seed)
        self._rngs: dict[str, np.random.Generator] = {}
        self._start_ms = start_ms
        self._held: list[tuple[int, int, DeviceReading]] = []  # (release ms, order, reading)
        self._order = 0
        self.duplicated = 0  # extra copies sent
        self.delayed = 0  # readings held back

    @property
    def holding(self) -> int:
        return len(self._held)

    def feed(self, readings: Iterable[DeviceReading], now_ms: int) -> list[DeviceReading]:
        """The readings to publish at virtual time now_ms, given the new ones."""
        out: list[DeviceReading] = []
        for r in readings:
            delay_ms = self._delay_ms(r)
            if delay_ms > 0:
                self.delayed += 1
                self._order += 1
                heapq.heappush(self._held, (r.ts_ms + delay_ms, self._order, r))
            else:
                self._emit(r, out)
        while self._held and self._held[0][0] <= now_ms:
            self._emit(heapq.heappop(self._held)[2], out)
        return out

    def flush(self) -> list[DeviceReading]:
        """Everything still held back (at the end of a run)."""
        out: list[DeviceReading] = []
        while self._held:
            self._emit(heapq.heappop(self._held)[2], out)
        return out

    def _rng(self, device: str) -> np.random.Generator:
        rng = self._rngs.get(device)
        if rng is None:
            rng = self._rngs[device] = self._streams.get("delivery", device)
        return rng

    def _offset_s(self, r: DeviceReading) -> float:
        return (r.ts_ms - self._start_ms) / MS_PER_S

    def _delay_ms(self, r: DeviceReading) -> int:
        offset = self._offset_s(r)
        for event in self._reorders:
            if r.device in event.devices and event.active(offset):
                rng = self._rng(r.device)
                if rng.random() < event.probability:
                    return 1 + int(rng.random() * event.max_delay_s * MS_PER_S)
        return 0

    def _emit(self, r: DeviceReading, out: list[DeviceReading]) -> None:
        copies = 1
        offset = self._offset_s(r)
        for event in self._duplicates:
            hit = r.device in event.devices and event.active(offset)
            if hit and self._rng(r.device).random() < event.probability:
                copies = max(copies, event.copies)
        self.duplicated += copies - 1
        out.extend([r] * copies)
