"""Checks a simulated stream against the tier crossings its scenario promises.

This is not the alarm engine: it reads the sensor's effective limits (catalogue defaults with
the registry's overrides) and asks the simple questions a scenario author needs answered, the
same way for every run:

- `limit`: a usable reading at or beyond the tier's limit (|value| for magnitude rules) that
  stays there for the rule's on-delay (red fires at once where `red_immediate`);
- `stale`: no reading for the stale rule's factor x period (its `tier`), or for
  `offline_after_s` (its `offline_tier`);
- `quality`: a reading with bad quality, on a sensor whose quality rule raises at least the
  promised tier.

Derived flow imbalances are computed from their inputs' readings: (first - second) / first x 100
at each reading of the second input, with the first input's latest value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from hazwatch.domain import Quality, Tier
from hazwatch.rulespec import RuleSpec
from simulators.models.base import MS_PER_S
from simulators.plant import Plant
from simulators.scenario import Expectation, Scenario
from simulators.simulation import DeviceReading

Series = list[tuple[float, float | None, int]]  # (scenario seconds, value, quality)


@dataclass(frozen=True, slots=True)
class Result:
    expectation: Expectation
    met_at_s: float | None  # when the crossing happened; None if it did not
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.met_at_s is not None and self.met_at_s <= self.expectation.by_s

    def __str__(self) -> str:
        e = self.expectation
        when = "never" if self.met_at_s is None else f"at {self.met_at_s:.0f} s"
        verdict = "ok" if self.met else "MISSED"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{verdict}: {e.sensor} {e.tier.colour} via {e.via} by {e.by_s:g} s: {when}{extra}"


def check(
    plant: Plant,
    scenario: Scenario,
    readings: Iterable[DeviceReading],
    *,
    start_ms: int,
    end_ms: int,
    period_scale: float = 1.0,
) -> list[Result]:
    """Every expectation of the scenario, judged on the readings from start_ms to end_ms."""
    wanted = {e.sensor for e in scenario.expect}
    for key in list(wanted):
        if key in plant.derived:
            wanted.update(plant.derived[key].inputs)
    series: dict[str, Series] = {k: [] for k in wanted}
    for r in readings:
        for channel, value in r.values.items():
            key = f"{r.device}/{channel}"
            if key in series:
                t = (r.ts_ms - start_ms) / MS_PER_S
                series[key].append((t, value, r.quality.get(channel, 0)))
    for s in series.values():
        s.sort(key=lambda x: x[0])  # published out of order? judge in event time
    end_s = (end_ms - start_ms) / MS_PER_S
    return [_judge(plant, e, series, end_s, period_scale) for e in scenario.expect]


def _judge(
    plant: Plant, e: Expectation, series: dict[str, Series], end_s: float, period_scale: float
) -> Result:
    if e.sensor in plant.derived:
        derived = plant.derived[e.sensor]
        if derived.op != "imbalance":
            return Result(e, None, f"cannot judge derived op {derived.op}")
        rules, data = (
            derived.rules,
            _imbalance(series[derived.inputs[0]], series[derived.inputs[1]]),
        )
        period_s: float | None = None
    else:
        info = plant.sensors[e.sensor]
        rules, data, period_s = info.rules, series[e.sensor], info.period_s
    if e.via == "limit":
        return _limit(e, rules, data)
    if e.via == "quality":
        return _quality(e, rules, data)
    if period_s is None:
        return Result(e, None, "an event stream has no stale rule")
    return _stale(e, rules, data, period_s * period_scale, end_s)


def _limit(e: Expectation, rules: RuleSpec, data: Series) -> Result:
    name = e.tier.colour
    high = getattr(rules.high, name, None) if rules.high is not None else None
    low = getattr(rules.low, name, None) if rules.low is not None else None
    if high is None and low is None:
        return Result(e, None, f"the sensor has no {name} limit")
    on_delay = rules.on_delay_s or 0.0
    if e.tier is Tier.RED and rules.red_immediate:
        on_delay = 0.0
    since: float | None = None
    for t, value, quality in data:
        if value is None or Quality.is_bad(quality) or math.isnan(value):
            since = None
            continue
        v = abs(value) if rules.magnitude else value
        beyond = (high is not None and v >= high) or (low is not None and v <= low)
        if not beyond:
            since = None
            continue
        since = t if since is None else since
        if t - since >= on_delay:
            return Result(e, t)
    return Result(e, None, "the limit was not reached and held")


def _quality(e: Expectation, rules: RuleSpec, data: Series) -> Result:
    if rules.quality is None or rules.quality.tier < e.tier:
        return Result(e, None, "the sensor's quality rule raises a lower tier")
    for t, _, quality in data:
        if Quality.is_bad(quality):
            return Result(e, t)
    return Result(e, None, "no reading with bad quality")


def _stale(e: Expectation, rules: RuleSpec, data: Series, period_s: float, end_s: float) -> Result:
    stale = rules.stale
    if stale is None:
        return Result(e, None, "the sensor has no stale rule")
    if e.tier <= stale.tier:
        limit_s = stale.factor * period_s
    elif stale.offline_after_s is not None and e.tier <= stale.offline_tier:
        limit_s = stale.offline_after_s
    else:
        return Result(e, None, f"the stale rule never raises {e.tier.colour}")
    times = [t for t, _, _ in data]
    previous = 0.0 if not times else None
    for t in times:
        if previous is not None and t - previous > limit_s:
            return Result(e, previous + limit_s)
        previous = t
    if previous is not None and end_s - previous > limit_s:
        return Result(e, previous + limit_s)
    return Result(e, None, "no gap long enough")


def _imbalance(first: Series, second: Series) -> Series:
    out: Series = []
    i, latest = 0, None
    for t, value, quality in second:
        while i < len(first) and first[i][0] <= t:
            latest = first[i][1]
            i += 1
        if latest is None or value is None or latest == 0 or Quality.is_bad(quality):
            continue
        out.append((t, (latest - value) / latest * 100.0, 0))
    return out
