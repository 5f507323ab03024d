"""Sensor faults and scripted changes, applied to each reading a sensor reports.

`SensorFaults.report` turns a model's raw value into what the device reports, in this order:
ramp (a scripted process change), drift, spike, stuck; then the sensor's range (a sensor
saturates at its range ends) and its reporting precision; then out-of-range garbage, a detector
fault (no value, quality SENSOR_FAULT, a fault number) and dropout (no reading at all). Each
sensor has its own state and random stream, so the outcome depends only on its own readings.

Publishing faults (duplicate, out-of-order) are not here: they act on messages, in
`simulators.delivery`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hazwatch.domain import Quality
from simulators.models.base import DECIMALS
from simulators.plant import OUTPUT_KINDS, SensorInfo
from simulators.scenario import Drift, Dropout, Fault, Garbage, Ramp, Spike, Stuck

SensorEvent = Ramp | Spike | Stuck | Drift | Garbage | Fault | Dropout
GOOD = int(Quality.GOOD)
SENSOR_FAULT = int(Quality.SENSOR_FAULT)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a sensor reports for one reading."""

    value: float | None  # None: the device has no value (a detector fault)
    quality: int
    emitted: bool  # False: the sensor (or its device) is silent
    fault_code: int = 0  # the detector's fault number, 0 when healthy


def events_for(info: SensorInfo, events: list[SensorEvent]) -> list[SensorEvent]:
    """The events aimed at this sensor, by its key or its device. A fault of a whole device
    spares the detector's own outputs: they report the fault."""
    hits = []
    for e in events:
        by_device = info.device in getattr(e, "devices", ())
        if by_device and isinstance(e, Fault) and info.kind in OUTPUT_KINDS:
            continue
        if info.key in e.sensors or by_device:
            hits.append(e)
    return hits


class SensorFaults:
    def __init__(
        self, info: SensorInfo, events: list[SensorEvent], rng: np.random.Generator
    ) -> None:
        self.info = info
        self._events = events
        self._rng = rng
        self._decimals = DECIMALS.get(info.unit, 3)
        self._spikes_left = {id(e): e.samples for e in events if isinstance(e, Spike)}
        self._held: dict[int, float] = {}  # stuck values and ramp baselines, by event

    def report(self, offset_s: float, raw: float) -> Outcome:
        value = raw
        active = [e for e in self._events if e.active(offset_s)]
        for event in self._events:
            if not event.active(offset_s) and isinstance(event, Stuck):
                self._held.pop(id(event), None)
        value = self._ramps(offset_s, value)
        for event in active:
            if isinstance(event, Drift):
                value += event.rate_per_min * (offset_s - event.at_s) / 60.0
        value = self._spikes(offset_s, value)
        for event in active:
            if isinstance(event, Stuck):
                value = self._held.setdefault(id(event), value)
        value = round(min(max(value, self.info.range_min), self.info.range_max), self._decimals)
        value = value + 0.0  # no negative zero in payloads

        for event in active:
            if isinstance(event, Garbage) and self._rng.random() < event.probability:
                value = self._garbage(event.mode)
        outcome = Outcome(value, GOOD, emitted=True)
        for event in active:
            if isinstance(event, Fault):
                outcome = Outcome(None, SENSOR_FAULT, emitted=True, fault_code=event.code)
        if any(isinstance(e, Dropout) for e in active):
            return Outcome(outcome.value, outcome.quality, False, outcome.fault_code)
        return outcome

    def _ramps(self, offset_s: float, value: float) -> float:
        for event in self._events:
            if not isinstance(event, Ramp) or offset_s < event.at_s:
                continue
            base = self._held.setdefault(id(event), value)
            weight = _ramp_weight(event, offset_s)
            value += weight * (event.to - base)
        return value

    def _spikes(self, offset_s: float, value: float) -> float:
        for event in self._events:
            if isinstance(event, Spike) and offset_s >= event.at_s:
                left = self._spikes_left[id(event)]
                if left > 0:
                    self._spikes_left[id(event)] = left - 1
                    value += event.magnitude
        return value

    def _garbage(self, mode: str) -> float:
        if mode == "mixed":
            mode = ("high", "low", "nan", "inf")[int(self._rng.integers(0, 4))]
        span = max(self.info.span, 1.0)
        if mode == "high":
            return round(self.info.range_max + span * float(self._rng.uniform(0.5, 10.0)), 3)
        if mode == "low":
            return round(self.info.range_min - span * float(self._rng.uniform(0.5, 10.0)), 3)
        if mode == "nan":
            return math.nan
        return math.inf


def _ramp_weight(event: Ramp, offset_s: float) -> float:
    """0..1: up over ramp_s from at_s, held, back down over ramp_s after the event's end."""
    if event.ramp_s == 0:
        return 1.0 if event.active(offset_s) else 0.0
    if offset_s < event.end_s:
        return min(1.0, (offset_s - event.at_s) / event.ramp_s)
    held = min(1.0, (event.end_s - event.at_s) / event.ramp_s)
    return max(0.0, held - (offset_s - event.end_s) / event.ramp_s)
