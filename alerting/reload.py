"""New rules for a running engine: carry the state over, and settle what the change decides.

A rule edit (API) or a registry load gives new `CompiledRules` while episodes are open and
delays are pending. `carry_state` moves each sensor's state row to its position in the new
rules (matched by sensor id; a sensor new to the engine starts empty), so latches, pending
delays, tiers and remembered readings survive. `reconcile` then applies what the new rules
decide at once, for the sensors whose rules changed (docs/alarms.md, "Rule changes"):

- a level whose limit is now off has its latches dropped; a change of `hold_s` drops every
  latch of the sensor (event-stream and delayed latches do not mean the same thing);
- the side's tier becomes the highest level still delayed-on; a rate, stale or quality rule
  that is now off goes to 0, one that is still on and active takes its new tier; a trend
  rule that is now off goes to 0;
- a vote's tier is recomputed with its new members, k and tier.

Each tier that moves gives a transition at the reload's time (or the sensor's clock, if
later), so the open episode escalates, de-escalates or clears like any other. The sensor's
clock does not move (a timer due before the reload still fires). Latches that are kept meet
the new limits at the next reading. Pure: arrays in, state and transitions out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.rules import CompiledRules, Rule
from alerting.state import COMPACT_FIELDS, NEVER, EngineState, Rows, StateDelta
from alerting.transitions import Transitions

IntArray = npt.NDArray[np.int64]


def carry_state(
    old_rules: CompiledRules,
    old: EngineState,
    new_rules: CompiledRules,
    *,
    never_seen_since_us: int | None,
) -> EngineState:
    """The state rows of `old` at their positions in `new_rules`; sensors new to the engine
    start empty (their stale timers from `never_seen_since_us`). Remembered readings are
    kept, the newest first, up to the new history length."""
    state = EngineState.empty(new_rules.n, new_rules.history_len, last_ts_us=never_seen_since_us)
    source = old_positions(old_rules, new_rules)
    keep = np.flatnonzero(source >= 0)
    if not len(keep):
        return state
    src = source[keep]
    rows = state.rows
    history = ("hist_t", "hist_v", "hist_n")
    for name, array in rows.arrays().items():
        if name not in history:
            array[keep] = getattr(old.rows, name)[src]
    h = min(old.history_len, new_rules.history_len)  # rows are right-aligned: keep the newest
    rows.hist_t[keep, -h:] = old.rows.hist_t[src, -h:]
    rows.hist_v[keep, -h:] = old.rows.hist_v[src, -h:]
    rows.hist_n[keep] = np.minimum(old.rows.hist_n[src], h)
    return state


def old_positions(old_rules: CompiledRules, new_rules: CompiledRules) -> IntArray:
    """For each position of `new_rules`, the same sensor's position in `old_rules` (-1)."""
    return old_rules.positions(new_rules.sensor_id).astype(np.int64)


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What new rules decide at once: transitions (subjects are positions and vote indices
    of the new rules) and the changed rows. `dropped` are tiers of sensors and votes the new
    rules no longer have: (rule, old subject, tier); they clear."""

    transitions: Transitions
    delta: StateDelta
    dropped: list[tuple[Rule, int, int]]


def reconcile(
    old_rules: CompiledRules,
    old: EngineState,
    new_rules: CompiledRules,
    carried: EngineState,
    *,
    at_us: int,
) -> Reconciled:
    """Settle the carried state under the new rules (module docstring) at `at_us`."""
    source = old_positions(old_rules, new_rules)
    changed = np.array(
        [
            src >= 0 and old_rules.sensors[src] != new
            for src, new in zip(source.tolist(), new_rules.sensors, strict=True)
        ],
        dtype=np.bool_,
    )
    index = np.flatnonzero(changed)
    before = carried.rows.take(index)
    work = before.copy()
    ts = np.maximum(before.eval_ts, at_us)
    _settle(old_rules, new_rules, source[index], index, work)
    parts = []
    for rule in (Rule.HIGH, Rule.LOW, Rule.RATE, Rule.TREND, Rule.STALE, Rule.QUALITY):
        moved = np.flatnonzero(work.tier[:, rule] != before.tier[:, rule])
        parts.append(
            Transitions.build(
                rule, index[moved], ts[moved],
                tiers=(before.tier[moved, rule], work.tier[moved, rule]),
                value=before.last_valid[moved],
            )
        )  # fmt: skip
    member_before = np.maximum(before.tier[:, Rule.HIGH], before.tier[:, Rule.LOW])
    member_after = np.maximum(work.tier[:, Rule.HIGH], work.tier[:, Rule.LOW])
    member_moved = member_after != member_before
    work.member_ts[member_moved] = ts[member_moved]
    after = carried.updated(
        StateDelta(index.astype(np.intp), work, np.ones(len(index), dtype=np.bool_))
    )
    votes, dropped_votes = _votes(old_rules, old, new_rules, after, at_us=at_us)
    parts.append(votes)
    persist = np.zeros(len(index), dtype=np.bool_)
    for name in COMPACT_FIELDS:
        diff = getattr(work, name) != getattr(before, name)
        persist |= diff.any(axis=1) if diff.ndim > 1 else diff
    return Reconciled(
        transitions=Transitions.concat(parts).sorted(),
        delta=StateDelta(index.astype(np.intp), work, persist | member_moved),
        dropped=_dropped_sensors(old_rules, old, new_rules) + dropped_votes,
    )


def _settle(
    old_rules: CompiledRules,
    new_rules: CompiledRules,
    src: IntArray,
    dst: IntArray,
    work: Rows,
) -> None:
    """Latches and tiers of the changed sensors (`dst` new positions, `src` old ones)."""
    off = np.isnan(new_rules.limit[:, dst].T)  # (k, 8): levels now off
    hold_changed = old_rules.hold_us[src] != new_rules.hold_us[dst]
    off |= hold_changed[:, None]
    work.raw[off] = False
    work.delayed[off] = False
    work.since[off] = NEVER
    for side, rule in ((0, Rule.HIGH), (1, Rule.LOW)):
        tier = np.zeros(len(dst), dtype=np.int8)
        for level in range(4):
            tier = np.where(work.delayed[:, side * 4 + level], np.int8(level + 1), tier)
        work.tier[:, rule] = tier
    for rule, on, new_tier in (
        (Rule.RATE, new_rules.rate_window_us[dst] > 0, new_rules.rate_tier[dst]),
        (Rule.QUALITY, new_rules.quality_tier[dst] > 0, new_rules.quality_tier[dst]),
    ):
        active = work.tier[:, rule] != 0
        work.tier[:, rule] = np.where(active & on, new_tier, 0)
    work.tier[new_rules.trend_window_us[dst] == 0, Rule.TREND] = 0
    # Stale: what the new timers say at the sensor's clock, where they changed.
    stale_changed = (
        (old_rules.stale_after_us[src] != new_rules.stale_after_us[dst])
        | (old_rules.offline_after_us[src] != new_rules.offline_after_us[dst])
        | (old_rules.stale_tier[src] != new_rules.stale_tier[dst])
        | (old_rules.offline_tier[src] != new_rules.offline_tier[dst])
    )
    known = work.last_ts != NEVER
    tier = np.zeros(len(dst), dtype=np.int8)
    for after, target in (
        (new_rules.stale_after_us[dst], new_rules.stale_tier[dst]),
        (new_rules.offline_after_us[dst], new_rules.offline_tier[dst]),
    ):
        due = known & (after > 0) & (work.last_ts + after <= work.eval_ts)
        tier = np.where(due, np.maximum(tier, target), tier).astype(np.int8)
    work.tier[stale_changed, Rule.STALE] = tier[stale_changed]


def vote_tiers(rules: CompiledRules, rows: Rows) -> tuple[npt.NDArray[np.int8], IntArray]:
    """Each vote's tier and count of members at its tier or above, from the member tiers."""
    if not rules.votes:
        return np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.int64)
    member_tier = np.maximum(rows.tier[:, Rule.HIGH], rows.tier[:, Rule.LOW])
    vote = rules.vote_of_member
    inside = member_tier[rules.member_pos] >= rules.vote_at[vote]
    count = np.bincount(vote, weights=inside, minlength=len(rules.votes)).astype(np.int64)
    tier = np.where(count >= rules.vote_k, rules.vote_at + 1, 0).astype(np.int8)
    return tier, count


def _votes(
    old_rules: CompiledRules,
    old: EngineState,
    new_rules: CompiledRules,
    after: EngineState,
    *,
    at_us: int,
) -> tuple[Transitions, list[tuple[Rule, int, int]]]:
    old_tier, _ = vote_tiers(old_rules, old.rows)
    new_tier, count = vote_tiers(new_rules, after.rows)
    old_index = {(v.asset_id, v.name): i for i, v in enumerate(old_rules.votes)}
    subjects, ts, frm, to, value = [], [], [], [], []
    for i, vote in enumerate(new_rules.votes):
        j = old_index.pop((vote.asset_id, vote.name), None)
        before = 0 if j is None else int(old_tier[j])
        if before != int(new_tier[i]):
            clock = max(int(after.rows.member_ts[m]) for m in vote.members)
            subjects.append(i)
            ts.append(max(at_us, clock))
            frm.append(before)
            to.append(int(new_tier[i]))
            value.append(float(count[i]))
    dropped = [(Rule.VOTE, j, int(old_tier[j])) for j in old_index.values() if old_tier[j]]
    moves = Transitions.build(
        Rule.VOTE, subjects, ts, tiers=(frm, to), value=value, predicted=False
    )
    return moves, dropped


def _dropped_sensors(
    old_rules: CompiledRules, old: EngineState, new_rules: CompiledRules
) -> list[tuple[Rule, int, int]]:
    """Non-zero tiers of sensors the new rules no longer have."""
    gone = np.flatnonzero(new_rules.positions(old_rules.sensor_id) < 0)
    out = []
    for pos in gone.tolist():
        for rule in (Rule.HIGH, Rule.LOW, Rule.RATE, Rule.TREND, Rule.STALE, Rule.QUALITY):
            tier = int(old.rows.tier[pos, rule])
            if tier:
                out.append((rule, pos, tier))
    return out
