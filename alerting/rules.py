"""Compiles the effective rule specs of all sensors into what the engine and reference read.

`SensorRules` is one sensor's rules in plain Python numbers (microseconds, floats, None for
"off"): the reference reads these. `CompiledRules` holds the same numbers as numpy arrays
indexed by sensor position (`0..n-1`, in the order given), plus the votes and derived signals:
the engine reads these. Both come from one list of `SensorRules`, so they cannot disagree.

The semantics of every field are in docs/alarms.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from hazwatch.domain import US_PER_S, Tier
from hazwatch.registry.model import DeriveSpec
from hazwatch.registry.snapshot import RegistrySnapshot, SensorInfo
from hazwatch.rulespec import RuleSpec, VoteRule

LEVELS = 4  # blue, yellow, orange, red
SIDES = 2  # high, low
DEFAULT_HISTORY_LEN = 64
MAX_HISTORY_LEN = 512

Limits = tuple[float | None, float | None, float | None, float | None]
NO_LIMITS: Limits = (None, None, None, None)


class Rule(IntEnum):
    """Rule codes of transitions; the names are the `alarms.rule` column values."""

    HIGH = 0
    LOW = 1
    RATE = 2
    TREND = 3
    STALE = 4
    QUALITY = 5
    VOTE = 6

    @property
    def label(self) -> str:
        return self.name.lower()


SENSOR_RULES = (Rule.HIGH, Rule.LOW, Rule.RATE, Rule.TREND, Rule.STALE, Rule.QUALITY)


class RuleCompileError(ValueError):
    """The effective rules of a sensor cannot be evaluated as given."""


@dataclass(frozen=True, slots=True)
class RateParams:
    window_us: int
    rise_per_min: float | None
    fall_per_min: float | None
    tier: int


@dataclass(frozen=True, slots=True)
class TrendParams:
    window_us: int
    horizon_s: float
    min_points: int


@dataclass(frozen=True, slots=True)
class StaleParams:
    after_us: int
    tier: int
    offline_after_us: int | None
    offline_tier: int


@dataclass(frozen=True, slots=True)
class SensorRules:
    """One sensor's effective rules, in the units the engine uses."""

    sensor_id: int
    high: Limits = NO_LIMITS
    low: Limits = NO_LIMITS
    magnitude: bool = False
    deadband: float = 0.0
    on_delay_us: tuple[int, int, int, int] = (0, 0, 0, 0)  # per level, red_immediate applied
    off_delay_us: int = 0
    hold_us: int = 0  # 0: not an event stream
    rate: RateParams | None = None
    trend: TrendParams | None = None
    stale: StaleParams | None = None
    quality_tier: int = 0  # 0: no quality rule

    def limits(self, side: int) -> Limits:
        return self.high if side == 0 else self.low


@dataclass(frozen=True, slots=True)
class DeriveRule:
    """A derived sensor (`out`, a position) computed from one or two inputs (positions)."""

    out: int
    op: Literal["rate", "imbalance"]
    inputs: tuple[int, ...]
    scale: float = 1.0
    window_us: int = 0  # rate: the smoothing window


@dataclass(frozen=True, slots=True)
class VoteSpec:
    name: str
    asset_id: int
    members: tuple[int, ...]  # sensor positions
    k: int
    at: int

    @property
    def rule_name(self) -> str:
        return f"vote:{self.name}"


def _us(seconds: float) -> int:
    return round(seconds * US_PER_S)


def sensor_rules(
    sensor_id: int, spec: RuleSpec, period_s: float | None, *, key: str = ""
) -> SensorRules:
    """One sensor's effective `RuleSpec` in engine units; raises RuleCompileError."""
    where = key or f"sensor {sensor_id}"
    if spec.enabled is False:
        return SensorRules(sensor_id=sensor_id)
    try:
        spec.check_effective()
    except ValueError as exc:
        raise RuleCompileError(f"{where}: {exc}") from None
    on_s = spec.on_delay_s or 0.0
    off_s = spec.off_delay_s or 0.0
    hold_s = spec.hold_s or 0.0
    on_us = _us(on_s)
    red_on = 0 if spec.red_immediate else on_us
    stale = None
    if spec.stale is not None and period_s is not None:
        offline = spec.stale.offline_after_s
        stale = StaleParams(
            after_us=_us(spec.stale.factor * period_s),
            tier=int(spec.stale.tier),
            offline_after_us=None if offline is None else _us(offline),
            offline_tier=int(spec.stale.offline_tier),
        )
    rate = None
    if spec.rate is not None and (spec.rate.rise_per_min or spec.rate.fall_per_min):
        rate = RateParams(
            window_us=_us(spec.rate.window_s),
            rise_per_min=spec.rate.rise_per_min,
            fall_per_min=spec.rate.fall_per_min,
            tier=int(spec.rate.tier),
        )
    trend = None
    has_limits = any(v is not None for v in (*_limits(spec, "high"), *_limits(spec, "low")))
    if spec.trend is not None and has_limits:
        trend = TrendParams(
            window_us=_us(spec.trend.window_s),
            horizon_s=spec.trend.horizon_s,
            min_points=spec.trend.min_points,
        )
    return SensorRules(
        sensor_id=sensor_id,
        high=_limits(spec, "high"),
        low=_limits(spec, "low"),
        magnitude=bool(spec.magnitude),
        deadband=spec.deadband or 0.0,
        on_delay_us=(on_us, on_us, on_us, red_on),
        off_delay_us=_us(off_s),
        hold_us=_us(hold_s),
        rate=rate,
        trend=trend,
        stale=stale,
        quality_tier=0 if spec.quality is None else int(spec.quality.tier),
    )


def _limits(spec: RuleSpec, side: Literal["high", "low"]) -> Limits:
    given = spec.high if side == "high" else spec.low
    return NO_LIMITS if given is None else given.as_tuple()


def _f(values: Sequence[float | None]) -> npt.NDArray[np.float64]:
    return np.array([math.nan if v is None else v for v in values], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """Every sensor's rules as arrays indexed by position; see `compile_rules`."""

    sensors: tuple[SensorRules, ...]
    derives: tuple[DeriveRule, ...]
    votes: tuple[VoteSpec, ...]
    history_len: int
    sensor_id: npt.NDArray[np.int32]
    # Levels: rows side * 4 + level - 1 (0..3 high blue..red, 4..7 low blue..red); NaN = off.
    limit: npt.NDArray[np.float64]  # (8, n)
    reset: npt.NDArray[np.float64]  # (8, n): limit -/+ deadband
    on_delay_us: npt.NDArray[np.int64]  # (8, n)
    off_delay_us: npt.NDArray[np.int64]  # (n,)
    hold_us: npt.NDArray[np.int64]  # (n,)
    magnitude: npt.NDArray[np.bool_]
    side_on: npt.NDArray[np.bool_]  # (2, n): any level of the side enabled
    rest: npt.NDArray[np.float64]  # (2, n): lowest reset limit of a side (x beyond: all reset)
    rate_window_us: npt.NDArray[np.int64]  # 0: no rate rule
    rate_rise: npt.NDArray[np.float64]  # NaN: none
    rate_fall: npt.NDArray[np.float64]
    rate_tier: npt.NDArray[np.int8]
    trend_window_us: npt.NDArray[np.int64]  # 0: no trend rule
    trend_horizon_s: npt.NDArray[np.float64]
    trend_min_points: npt.NDArray[np.int64]
    stale_after_us: npt.NDArray[np.int64]  # 0: no stale rule
    stale_tier: npt.NDArray[np.int8]
    offline_after_us: npt.NDArray[np.int64]  # 0: no offline step
    offline_tier: npt.NDArray[np.int8]
    quality_tier: npt.NDArray[np.int8]
    stale_min_us: npt.NDArray[np.int64]  # the shorter of the stale and offline delays; 0: none
    first_limit: npt.NDArray[np.float64]  # (2, n): lowest high limit, highest low limit
    needs_history: npt.NDArray[np.bool_]
    derive_window_us: npt.NDArray[np.int64]  # (n,) widest derived-rate window of an input
    # Derived rates: slot k of input i feeds `rate_out[k, i]` (-1: none); most inputs feed one.
    rate_out: npt.NDArray[np.int32]  # (K, n)
    rate_window_us_of: npt.NDArray[np.int64]  # (K, n)
    rate_scale: npt.NDArray[np.float64]  # (K, n)
    imbalance: npt.NDArray[np.int32]  # (J, 3): input a, input b, output
    # Votes as arrays: one entry per (vote, member), and each vote's k and tier.
    vote_of_member: npt.NDArray[np.int64]
    member_pos: npt.NDArray[np.int64]
    members_by_pos: npt.NDArray[np.int64]  # entries ordered by member position
    vote_at: npt.NDArray[np.int8]
    vote_k: npt.NDArray[np.int64]
    _index: Mapping[int, int] = field(repr=False)
    _lookup: npt.NDArray[np.int32] = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.sensors)

    def position(self, sensor_id: int) -> int | None:
        return self._index.get(sensor_id)

    def positions(self, sensor_ids: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
        """Positions of sensor ids; -1 for ids these rules do not know."""
        ids = sensor_ids.astype(np.int64)
        inside = (ids >= 0) & (ids < len(self._lookup))
        out = np.full(len(ids), -1, dtype=np.int32)
        out[inside] = self._lookup[ids[inside]]
        return out


def compile_rules(
    sensors: Sequence[SensorRules],
    *,
    derives: Sequence[DeriveRule] = (),
    votes: Sequence[VoteSpec] = (),
    history_len: int | None = None,
) -> CompiledRules:
    """Arrays for the engine. `history_len` (H) bounds the rate/trend windows in readings;
    by default it is what the longest window needs at the sensor's period, within [8, 512]."""
    n = len(sensors)
    ids = [s.sensor_id for s in sensors]
    if len(set(ids)) != n:
        raise RuleCompileError("a sensor id is given twice")
    if any(i < 0 for i in ids):
        raise RuleCompileError("sensor ids must not be negative")
    derived_outputs = {d.out for d in derives}
    for d in derives:
        bad = [i for i in d.inputs if i in derived_outputs or not 0 <= i < n]
        if bad or not 0 <= d.out < n:
            raise RuleCompileError(
                f"derived sensor {ids[d.out] if 0 <= d.out < n else d.out}: inputs must be "
                "measured sensors (one level of derivation)"
            )
    for v in votes:
        if any(not 0 <= m < n for m in v.members) or v.k > len(v.members):
            raise RuleCompileError(f"vote {v.name}: bad members or k")
    lookup = np.full(max(ids, default=-1) + 1, -1, dtype=np.int32)
    lookup[np.array(ids, dtype=np.int64)] = np.arange(n, dtype=np.int32)

    limit = np.full((8, n), math.nan)
    for i, s in enumerate(sensors):
        limit[:4, i] = _f(s.high)
        limit[4:, i] = _f(s.low)
    deadband = np.array([s.deadband for s in sensors], dtype=np.float64)
    reset = np.vstack([limit[:4] - deadband, limit[4:] + deadband]) if n else limit.copy()
    side_on = np.vstack(
        [~np.all(np.isnan(limit[:4]), axis=0), ~np.all(np.isnan(limit[4:]), axis=0)]
    )
    # The reset limit beyond which every level of a side is reset: a reading past it, with the
    # side's latches at rest, cannot change anything (the engine's fast path).
    rest = np.vstack(
        [
            np.nan_to_num(np.fmin.reduce(reset[:4], axis=0), nan=np.inf),
            np.nan_to_num(np.fmax.reduce(reset[4:], axis=0), nan=-np.inf),
        ]
    )
    on_delay = np.zeros((8, n), dtype=np.int64)
    for i, s in enumerate(sensors):
        on_delay[:4, i] = s.on_delay_us
        on_delay[4:, i] = s.on_delay_us

    def ints(get: Callable[[SensorRules], int]) -> npt.NDArray[np.int64]:
        return np.array([get(s) for s in sensors], dtype=np.int64)

    def floats(get: Callable[[SensorRules], float | None]) -> npt.NDArray[np.float64]:
        return _f([get(s) for s in sensors])

    def tiers(get: Callable[[SensorRules], int]) -> npt.NDArray[np.int8]:
        return np.array([get(s) for s in sensors], dtype=np.int8)

    rate_window = ints(lambda s: s.rate.window_us if s.rate else 0)
    trend_window = ints(lambda s: s.trend.window_us if s.trend else 0)
    derive_window = np.zeros(n, dtype=np.int64)
    for d in derives:
        if d.op == "rate":
            derive_window[d.inputs[0]] = max(derive_window[d.inputs[0]], d.window_us)
    if history_len is None:
        history_len = _default_history_len(sensors, rate_window, trend_window, derive_window)
    if not 2 <= history_len <= MAX_HISTORY_LEN:
        raise RuleCompileError(f"history_len must be within 2..{MAX_HISTORY_LEN}")
    return CompiledRules(
        sensors=tuple(sensors),
        derives=tuple(derives),
        votes=tuple(votes),
        history_len=history_len,
        sensor_id=np.array(ids, dtype=np.int32),
        limit=limit,
        reset=reset,
        on_delay_us=on_delay,
        off_delay_us=ints(lambda s: s.off_delay_us),
        hold_us=ints(lambda s: s.hold_us),
        magnitude=np.array([s.magnitude for s in sensors], dtype=np.bool_),
        side_on=side_on,
        rest=rest,
        rate_window_us=rate_window,
        rate_rise=floats(lambda s: s.rate.rise_per_min if s.rate else None),
        rate_fall=floats(lambda s: s.rate.fall_per_min if s.rate else None),
        rate_tier=tiers(lambda s: s.rate.tier if s.rate else 0),
        trend_window_us=trend_window,
        trend_horizon_s=floats(lambda s: s.trend.horizon_s if s.trend else 0.0),
        trend_min_points=ints(lambda s: s.trend.min_points if s.trend else 0),
        stale_after_us=ints(lambda s: s.stale.after_us if s.stale else 0),
        stale_tier=tiers(lambda s: s.stale.tier if s.stale else 0),
        offline_after_us=ints(lambda s: (s.stale.offline_after_us or 0) if s.stale else 0),
        offline_tier=tiers(lambda s: s.stale.offline_tier if s.stale else 0),
        quality_tier=tiers(lambda s: s.quality_tier),
        stale_min_us=ints(
            lambda s: (
                min(s.stale.after_us, s.stale.offline_after_us or s.stale.after_us)
                if s.stale
                else 0
            )
        ),
        first_limit=np.vstack(
            [
                np.nan_to_num(np.fmin.reduce(limit[:4], axis=0), nan=np.inf),
                np.nan_to_num(np.fmax.reduce(limit[4:], axis=0), nan=-np.inf),
            ]
        ),
        needs_history=(rate_window > 0) | (trend_window > 0) | (derive_window > 0),
        derive_window_us=derive_window,
        **_derive_arrays(n, derives),
        **_vote_arrays(votes),
        _index={sid: i for i, sid in enumerate(ids)},
        _lookup=lookup,
    )


def _vote_arrays(votes: Sequence[VoteSpec]) -> dict[str, npt.NDArray[Any]]:
    vote_of_member = np.array([i for i, v in enumerate(votes) for _ in v.members], np.int64)
    member_pos = np.array([m for v in votes for m in v.members], dtype=np.int64)
    return {
        "vote_of_member": vote_of_member,
        "member_pos": member_pos,
        "members_by_pos": np.argsort(member_pos, kind="stable").astype(np.int64),
        "vote_at": np.array([v.at for v in votes], dtype=np.int8),
        "vote_k": np.array([v.k for v in votes], dtype=np.int64),
    }


def _derive_arrays(n: int, derives: Sequence[DeriveRule]) -> dict[str, npt.NDArray[Any]]:
    rates = [d for d in derives if d.op == "rate"]
    slots = max((sum(1 for d in rates if d.inputs[0] == i) for i in range(n)), default=0)
    out = np.full((slots, n), -1, dtype=np.int32)
    window = np.zeros((slots, n), dtype=np.int64)
    scale = np.zeros((slots, n), dtype=np.float64)
    for d in rates:
        i = d.inputs[0]
        k = int(np.sum(out[:, i] >= 0))
        out[k, i], window[k, i], scale[k, i] = d.out, d.window_us, d.scale
    pairs = [(*d.inputs, d.out) for d in derives if d.op == "imbalance"]
    imbalance = np.array(pairs, dtype=np.int32).reshape(-1, 3)
    return {
        "rate_out": out,
        "rate_window_us_of": window,
        "rate_scale": scale,
        "imbalance": imbalance,
    }


def _default_history_len(
    sensors: Sequence[SensorRules],
    *windows: npt.NDArray[np.int64],
) -> int:
    """Readings the longest window holds at the sensor's own period, plus slack."""
    need = 8
    for i, s in enumerate(sensors):
        period_us = s.stale.after_us / 3 if s.stale else None
        longest = max(int(w[i]) for w in windows)
        if longest and period_us:
            need = max(need, math.ceil(longest / period_us) + 2)
    return min(need, MAX_HISTORY_LEN)


def compile_snapshot(
    snapshot: RegistrySnapshot, *, history_len: int | None = None
) -> CompiledRules:
    """The rules of every active sensor of a registry snapshot."""
    infos = snapshot.sensors
    sensors = [sensor_rules(s.sensor_id, _own_rules(s), s.period_s, key=s.key) for s in infos]
    position = {s.key: i for i, s in enumerate(infos)}
    derives = []
    for i, s in enumerate(infos):
        if s.derive is not None:
            derives.append(_derive(i, s.derive, position, snapshot))
    votes = [
        _vote(asset.asset_id, vote, position)
        for asset in snapshot.assets.values()
        for vote in asset.votes
    ]
    return compile_rules(sensors, derives=derives, votes=votes, history_len=history_len)


def _own_rules(info: SensorInfo) -> RuleSpec:
    """A derived signal has no stale rule of its own: it falls silent exactly when its inputs
    do, and their stale alarms already say so (one cause, one alarm). Its first value also
    waits for its window, which a stale timer at the input's period would call silence."""
    rules = info.rules
    if info.derive is not None and rules.stale is not None:
        return rules.model_copy(update={"stale": None})
    return rules


def _derive(
    out: int, spec: DeriveSpec, position: Mapping[str, int], snapshot: RegistrySnapshot
) -> DeriveRule:
    inputs = []
    for ref in spec.inputs:
        if ref not in position:
            raise RuleCompileError(f"derived input {ref!r} is not an active sensor")
        inputs.append(position[ref])
    window_us = 0
    if spec.op == "rate":
        info = snapshot.sensor(spec.inputs[0])
        period = (info.period_s if info else None) or 0.0
        window_us = _us(max(spec.smooth_s, 2 * period))
    return DeriveRule(out, spec.op, tuple(inputs), spec.scale, window_us)


def _vote(asset_id: int, vote: VoteRule, position: Mapping[str, int]) -> VoteSpec:
    missing = [ref for ref in vote.sensors if ref not in position]
    if missing:
        raise RuleCompileError(f"vote {vote.name}: sensors not active: {', '.join(missing)}")
    members = tuple(position[ref] for ref in vote.sensors)
    return VoteSpec(vote.name, asset_id, members, vote.k, int(vote.at))


def colour(tier: int) -> str:
    return Tier(tier).colour
