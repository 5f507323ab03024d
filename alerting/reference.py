"""The alarm semantics of docs/alarms.md, one reading at a time, in plain Python.

This is the test oracle of `alerting.engine`: it is written to be read next to the document,
not to be fast. Each sensor is a small state machine with timers; a batch is applied sensor by
sensor, each sensor's readings in time order; votes then look at the members' tier changes.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from alerting.rules import SENSOR_RULES, CompiledRules, DeriveRule, Rule, SensorRules
from alerting.state import NEVER
from alerting.transitions import Transition, transition_order
from hazwatch.domain import BAD_QUALITY_MIN, Quality, ReadingBatch

_FLAGGED = (int(Quality.UNCERTAIN), int(Quality.CALIBRATION))


Row = tuple[int, float, int]  # ts_us, value, quality


def side_level(index: int) -> tuple[int, int]:
    """Latch index 0..7 as (side, level 1..4)."""
    return index // 4, index % 4 + 1


@dataclass
class SensorState:
    rules: SensorRules
    history_len: int
    eval_ts: int = NEVER
    last_ts: int = NEVER
    last_valid: float = math.nan
    raw: list[bool] = field(default_factory=lambda: [False] * 8)  # R per latch
    delayed: list[bool] = field(default_factory=lambda: [False] * 8)  # D per latch
    since: list[int] = field(default_factory=lambda: [NEVER] * 8)
    rate_tier: int = 0
    trend_tier: int = 0
    stale_tier: int = 0
    quality_tier: int = 0
    member_ts: int = NEVER  # time of the last change of max(high, low), the votes' clock
    history: list[tuple[int, float]] = field(default_factory=list)  # valid readings, by time

    def side_tier(self, side: int) -> int:
        levels = [i % 4 + 1 for i in range(side * 4, side * 4 + 4) if self.delayed[i]]
        return max(levels, default=0)

    def tiers(self) -> dict[Rule, int]:
        return {
            Rule.HIGH: self.side_tier(0),
            Rule.LOW: self.side_tier(1),
            Rule.RATE: self.rate_tier,
            Rule.TREND: self.trend_tier,
            Rule.STALE: self.stale_tier,
            Rule.QUALITY: self.quality_tier,
        }

    def member_tier(self) -> int:
        return max(self.side_tier(0), self.side_tier(1))


def is_bad(value: float, quality: int) -> bool:
    return quality >= BAD_QUALITY_MIN or not math.isfinite(value)


def is_valid(value: float, quality: int) -> bool:
    return not is_bad(value, quality) and quality not in _FLAGGED


class _Moment:
    """Collects what happens to one sensor at one timestamp, then emits one transition per
    rule whose tier differs from before that timestamp."""

    def __init__(self, sensor: _SensorMachine) -> None:
        self.sensor = sensor
        self.ts: int | None = None
        self.before: dict[Rule, int] = {}
        self.value = math.nan

    def at(self, ts: int) -> None:
        if self.ts != ts:
            self.flush()
            self.ts = ts
            self.before = self.sensor.state.tiers()
            self.value = self.sensor.state.last_valid

    def flush(self) -> None:
        if self.ts is None:
            return
        state = self.sensor.state
        after = state.tiers()
        member_before = max(self.before[Rule.HIGH], self.before[Rule.LOW])
        for rule in SENSOR_RULES:
            if after[rule] != self.before[rule]:
                self.sensor.out.append(
                    Transition(rule, self.sensor.position, self.ts, self.before[rule],
                               after[rule], self.value, rule is Rule.TREND)
                )  # fmt: skip
        if state.member_tier() != member_before:
            state.member_ts = self.ts
            self.sensor.member_changes.append((self.ts, self.sensor.position, state.member_tier()))
        self.ts = None


class _SensorMachine:
    def __init__(
        self, position: int, state: SensorState, derives: tuple[DeriveRule, ...] = ()
    ) -> None:
        self.position = position
        self.state = state
        self.derives = derives  # rate derivations that take this sensor as input
        self.out: list[Transition] = []
        self.member_changes: list[tuple[int, int, int]] = []
        self.accepted_valid: list[tuple[int, float]] = []
        self.valid_before = state.last_valid
        self.derived: list[tuple[int, int, float]] = []  # (derived sensor, ts, value)
        self.moment = _Moment(self)

    # Timers ---------------------------------------------------------------------------

    def _due_timers(self, until: int) -> list[tuple[int, str, int]]:
        """(due time, kind, latch or tier) of every timer due at or before `until`."""
        s, r = self.state, self.state.rules
        due = []
        for i in range(8):
            if r.limits(i // 4)[i % 4] is None:
                continue
            if r.hold_us:
                if s.raw[i]:
                    due.append((s.since[i] + r.hold_us, "hold", i))
            elif s.raw[i] != s.delayed[i]:
                delay = r.on_delay_us[i % 4] if s.raw[i] else r.off_delay_us
                due.append((s.since[i] + delay, "delay", i))
        if r.stale is not None and s.last_ts != NEVER:
            due.append((s.last_ts + r.stale.after_us, "stale", r.stale.tier))
            if r.stale.offline_after_us is not None:
                due.append((s.last_ts + r.stale.offline_after_us, "stale", r.stale.offline_tier))
        # A latch timer is pending until it fires; a stale timer is computed from last_ts, so
        # one at or before the clock has already had its turn.
        return sorted(t for t in due if t[0] <= until and (t[1] != "stale" or t[0] > s.eval_ts))

    def advance(self, until: int) -> None:
        """Fire every timer due at or before `until`, in time order."""
        s = self.state
        for due, kind, arg in self._due_timers(until):
            if kind == "stale" and arg <= s.stale_tier:
                continue  # would not change anything: not a firing
            self.moment.at(due)
            if kind == "delay":
                s.delayed[arg] = s.raw[arg]
            elif kind == "hold":
                s.raw[arg] = s.delayed[arg] = False
                s.since[arg] = due
            else:
                s.stale_tier = arg
            s.eval_ts = max(s.eval_ts, due)

    # Readings -------------------------------------------------------------------------

    def reading(self, ts: int, value: float, quality: int) -> None:
        s, r = self.state, self.state.rules
        if ts <= s.eval_ts:  # late or duplicate: stored, never rolls the state back
            s.last_ts = max(s.last_ts, ts)
            if is_valid(value, quality):
                self._remember(ts, value)
            return
        self.advance(ts)
        self.moment.at(ts)
        self.moment.value = value
        if r.quality_tier:
            s.quality_tier = r.quality_tier if is_bad(value, quality) else 0
        s.stale_tier = 0
        if is_valid(value, quality):
            s.last_valid = value
            self._remember(ts, value)
            self.accepted_valid.append((ts, value))
            for d in self.derives:
                points = self.window(ts, d.window_us)
                if covered(ts, points, d.window_us):
                    t0, v0 = points[0]
                    self.derived.append(
                        (d.out, ts, (value - v0) / ((ts - t0) / 1e6) * 60 * d.scale)
                    )
            x = abs(value) if r.magnitude else value
            self._latches(ts, x)
            if r.rate is not None:
                s.rate_tier = self._rate_tier(ts, x)
            if r.trend is not None:
                s.trend_tier = self._trend_tier(ts, x)
        s.last_ts = max(s.last_ts, ts)
        self.advance(ts)  # zero delays: timers started by this reading
        s.eval_ts = ts

    def _remember(self, ts: int, value: float) -> None:
        h = self.state.history
        times = [t for t, _ in h]
        at = bisect.bisect_left(times, ts)
        if at < len(h) and h[at][0] == ts:
            return  # the same reading again
        h.insert(at, (ts, value))
        del h[: max(0, len(h) - self.state.history_len)]

    def _latches(self, ts: int, x: float) -> None:
        s, r = self.state, self.state.rules
        for i in range(8):
            side, level = side_level(i)
            limit = r.limits(side)[level - 1]
            if limit is None:
                continue
            if side == 0:
                is_set, is_reset = x >= limit, x < limit - r.deadband
            else:
                is_set, is_reset = x <= limit, x > limit + r.deadband
            if r.hold_us:
                if is_set:
                    s.raw[i] = s.delayed[i] = True
                    s.since[i] = ts
            elif is_set and not s.raw[i]:
                s.raw[i], s.since[i] = True, ts
            elif is_reset and s.raw[i]:
                s.raw[i], s.since[i] = False, ts

    def window(self, ts: int, window_us: int) -> list[tuple[int, float]]:
        """Stored valid readings within the window ending at `ts`, the last H at most."""
        upto = [p for p in self.state.history if p[0] <= ts][-self.state.history_len :]
        return [p for p in upto if p[0] >= ts - window_us]

    def _x(self, value: float) -> float:
        return abs(value) if self.state.rules.magnitude else value

    def _rate_tier(self, ts: int, x: float) -> int:
        rate = self.state.rules.rate
        assert rate is not None
        points = self.window(ts, rate.window_us)
        if not covered(ts, points, rate.window_us):
            return 0
        t0, v0 = points[0]
        per_min = (x - self._x(v0)) / ((ts - t0) / 1e6) * 60.0
        rising = rate.rise_per_min is not None and per_min >= rate.rise_per_min
        falling = rate.fall_per_min is not None and -per_min >= rate.fall_per_min
        return rate.tier if rising or falling else 0

    def _trend_tier(self, ts: int, x: float) -> int:
        r = self.state.rules
        assert r.trend is not None
        points = self.window(ts, r.trend.window_us)
        if len(points) < r.trend.min_points or not covered(ts, points, r.trend.window_us):
            return 0
        slope = least_squares_slope([(t - points[-1][0]) / 1e6 for t, _ in points],
                                    [self._x(v) for _, v in points])  # fmt: skip
        if slope is None:
            return 0
        projected = x + slope * r.trend.horizon_s
        high_next = next(((lv, h) for lv, h in enumerate(r.high, 1) if h is not None and x < h),
                         None)  # fmt: skip
        if high_next is not None and slope > 0 and projected >= high_next[1]:
            return high_next[0]
        low_next = next(((lv, lo) for lv, lo in enumerate(r.low, 1) if lo is not None and x > lo),
                        None)  # fmt: skip
        if low_next is not None and slope < 0 and projected <= low_next[1]:
            return low_next[0]
        return 0


def covered(ts: int, points: list[tuple[int, float]], window_us: int) -> bool:
    """A window counts once its readings span at least half of it."""
    return len(points) >= 2 and (ts - points[0][0]) * 2 >= window_us


def least_squares_slope(t: list[float], x: list[float]) -> float | None:
    """Slope of the least-squares line through (t, x); None when all t are equal."""
    n = len(t)
    st, sx = sum(t), sum(x)
    stt = sum(a * a for a in t)
    stx = sum(a * b for a, b in zip(t, x, strict=True))
    denominator = n * stt - st * st
    if denominator <= 0:
        return None
    return (n * stx - st * sx) / denominator


class Reference:
    """Scalar alarm evaluation: `evaluate(batch)` and `tick(now)` return transitions."""

    def __init__(self, rules: CompiledRules, *, last_ts_us: int | None = None) -> None:
        self.rules = rules
        self.states = [SensorState(r, rules.history_len) for r in rules.sensors]
        if last_ts_us is not None:
            for s in self.states:
                s.last_ts = last_ts_us

    def evaluate(self, batch: ReadingBatch, now_us: int | None = None) -> list[Transition]:
        rows: dict[int, list[tuple[int, float, int]]] = defaultdict(list)
        for sid, ts, value, quality in zip(
            batch.sensor_id.tolist(), batch.ts_us.tolist(), batch.value.tolist(),
            batch.quality.tolist(), strict=True,
        ):  # fmt: skip
            position = self.rules.position(sid)
            if position is not None:
                rows[position].append((ts, value, quality))
        members_before = self._member_snapshot()
        machines = {p: self._machine(p) for p in rows}
        for position in sorted(rows):
            self._run(machines[position], rows[position])
        derived = self._derive(machines)
        for position in sorted(derived):
            machine = machines.setdefault(position, self._machine(position))
            self._run(machine, derived[position])
        out = self._collect(machines.values(), members_before)
        if now_us is not None:
            out += self.tick(now_us)
        return sorted(out, key=transition_order)

    def tick(self, now_us: int) -> list[Transition]:
        members_before = self._member_snapshot()
        machines = [self._machine(p) for p in range(len(self.states))]
        for machine in machines:
            machine.advance(now_us)
            machine.moment.flush()
        return sorted(self._collect(machines, members_before), key=transition_order)

    def _machine(self, position: int) -> _SensorMachine:
        derives = tuple(d for d in self.rules.derives if d.op == "rate" and d.inputs[0] == position)
        return _SensorMachine(position, self.states[position], derives)

    @staticmethod
    def _run(machine: _SensorMachine, readings: list[tuple[int, float, int]]) -> None:
        for ts, value, quality in sorted(readings, key=lambda r: r[0]):  # stable: ties by arrival
            machine.reading(ts, value, quality)
        machine.moment.flush()

    def _derive(
        self, machines: dict[int, _SensorMachine]
    ) -> dict[int, list[tuple[int, float, int]]]:
        """Readings of derived sensors from this batch's accepted valid input readings."""
        out: dict[int, list[Row]] = defaultdict(list)
        for machine in machines.values():
            for position, ts, value in machine.derived:
                out[position].append((ts, value, 0))
        for d in self.rules.derives:
            if d.op == "imbalance":
                out[d.out] += self._imbalance(d.inputs, machines)
        return out

    def _imbalance(
        self, inputs: tuple[int, ...], machines: dict[int, _SensorMachine]
    ) -> list[tuple[int, float, int]]:
        a_pos, b_pos = inputs
        events = []
        for which, pos in enumerate(inputs):
            machine = machines.get(pos)
            if machine is not None:
                events += [(ts, which, v) for ts, v in machine.accepted_valid]
        if not events:
            return []
        # The inputs' latest accepted valid values before this batch.
        held = [self._valid_before(machines, a_pos), self._valid_before(machines, b_pos)]
        out = []
        events.sort(key=lambda e: e[0])
        for i, (ts, which, v) in enumerate(events):
            held[which] = v
            last_at_ts = i + 1 == len(events) or events[i + 1][0] != ts
            a, b = held
            if last_at_ts and not math.isnan(a) and not math.isnan(b) and a != 0:
                out.append((ts, (a - b) / a * 100.0, 0))
        return out

    def _valid_before(self, machines: dict[int, _SensorMachine], position: int) -> float:
        machine = machines.get(position)
        return self.states[position].last_valid if machine is None else machine.valid_before

    def _member_snapshot(self) -> list[tuple[int, int]]:
        return [(s.member_tier(), s.member_ts) for s in self.states]

    def _collect(
        self, machines: Iterable[_SensorMachine], members_before: list[tuple[int, int]]
    ) -> list[Transition]:
        out: list[Transition] = []
        changes: list[tuple[int, int, int]] = []
        for machine in machines:
            out += machine.out
            changes += machine.member_changes
        for index, vote in enumerate(self.rules.votes):
            members = set(vote.members)
            tier_of = {m: members_before[m][0] for m in members}
            clock = max(members_before[m][1] for m in members)

            def vote_tier(tiers: dict[int, int], at: int = vote.at, k: int = vote.k) -> int:
                return at + 1 if sum(t >= at for t in tiers.values()) >= k else 0

            tier = vote_tier(tier_of)
            mine = sorted((c for c in changes if c[1] in members), key=lambda c: c[0])
            for i, (ts, sensor, member_tier) in enumerate(mine):
                clock = max(clock, ts)
                tier_of[sensor] = member_tier
                if i + 1 < len(mine) and max(clock, mine[i + 1][0]) == clock:
                    continue  # more changes at this same time
                new = vote_tier(tier_of)
                if new != tier:
                    count = sum(t >= vote.at for t in tier_of.values())
                    out.append(Transition(Rule.VOTE, index, clock, tier, new, float(count), False))
                    tier = new
        return out
