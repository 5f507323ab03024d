"""Timers without readings (`tick`): delays completing, holds expiring, stale and offline
sensors, for every sensor at once."""

from __future__ import annotations

import numpy as np

from alerting.levels import LevelEvents, SideTransitions, side_transitions
from alerting.rules import CompiledRules, Rule
from alerting.stale import StaleSteps, stale_steps, stale_transitions
from alerting.state import NEVER, EngineState, StateDelta
from alerting.step import Step, compact_changed, note_member_changes
from alerting.transitions import Transitions
from alerting.votes import member_changes, vote_transitions
from hazwatch.domain import ReadingBatch


def tick(rules: CompiledRules, state: EngineState, now_us: int) -> Step:
    """Fire every timer due at or before `now_us`: delays completing, holds expiring, stale
    and offline sensors."""
    rows = state.rows
    n = state.n
    hold = rules.hold_us > 0
    enabled = ~np.isnan(rules.limit.T)  # (n, 8)
    pending = enabled & (rows.raw != rows.delayed) & ~hold[:, None]
    delay = np.where(rows.raw, rules.on_delay_us.T, rules.off_delay_us[:, None])
    due = rows.since + delay
    fire = pending & (due <= now_us)
    hold_due = rows.since + rules.hold_us[:, None]
    expire = enabled & hold[:, None] & rows.raw & (hold_due <= now_us)
    life = rows.last_ts
    steps = stale_steps(
        rules, np.arange(n, dtype=np.int32), life=life, clock=rows.eval_ts,
        until=np.full(n, now_us, dtype=np.int64), tier0=rows.tier[:, Rule.STALE],
        inclusive=True,
    )  # fmt: skip
    stale_fired = steps.fire_a & (steps.tier_a != rows.tier[:, Rule.STALE])
    stale_fired_b = steps.fire_b & (steps.tier_b != steps.tier_a)
    touched = fire.any(axis=1) | expire.any(axis=1) | stale_fired | stale_fired_b
    index = np.flatnonzero(touched)
    if not len(index):
        return Step(Transitions.empty(), StateDelta.empty(state.history_len), ReadingBatch.empty())
    before = rows.take(index)
    work = before.copy()
    f, e = fire[index], expire[index]
    d_due, h_due = due[index], hold_due[index]
    sub_pos = index.astype(np.int32)
    # Delayed latches.
    work.delayed[f] = work.raw[f]
    work.raw[e] = False
    work.delayed[e] = False
    work.since[e] = h_due[e]
    fired_ts = np.where(f, d_due, np.where(e, h_due, NEVER)).max(axis=1)
    out = []
    sides: dict[int, SideTransitions] = {}
    for side in (0, 1):
        cols = slice(side * 4, side * 4 + 4)
        g_f, l_f = np.nonzero(f[:, cols])
        g_e, l_e = np.nonzero(e[:, cols])
        events = LevelEvents(
            seg=np.concatenate([g_f, g_e]).astype(np.int64),
            ts=np.concatenate([d_due[:, cols][g_f, l_f], h_due[:, cols][g_e, l_e]]),
            latch=np.concatenate([l_f, l_e]).astype(np.int64) + side * 4,
            new=np.concatenate([before.raw[:, cols][g_f, l_f], np.zeros(len(g_e), np.bool_)]),
            seq=np.zeros(len(g_f) + len(g_e), dtype=np.int64),
        )
        st = side_transitions(side, events, before.delayed, before.tier[:, Rule.HIGH + side])
        work.tier[:, Rule.HIGH + side] = st.tier_end
        rule = Rule.HIGH if side == 0 else Rule.LOW
        out.append(Transitions.build(rule, sub_pos[st.seg], st.ts,
                                     tiers=(st.from_tier, st.to_tier),
                                     value=before.last_valid[st.seg]))  # fmt: skip
        sides[side] = st
    # Stale.
    s = StaleSteps(*(getattr(steps, name)[index] for name in StaleSteps.__slots__))
    tier0 = before.tier[:, Rule.STALE]
    _, parts = stale_transitions(s, np.arange(len(index), dtype=np.int32), tier0)
    for g, ts, frm, to in parts:
        out.append(Transitions.build(Rule.STALE, sub_pos[g], ts, tiers=(frm, to),
                                     value=before.last_valid[g]))  # fmt: skip
    work.tier[:, Rule.STALE] = s.tier_b
    stale_ts = np.maximum(
        np.where(s.fire_a & (s.tier_a != tier0), s.ts_a, NEVER),
        np.where(s.fire_b & (s.tier_b != s.tier_a), s.ts_b, NEVER),
    )
    work.eval_ts[:] = np.maximum(before.eval_ts, np.maximum(fired_ts, stale_ts))
    changes = member_changes(sub_pos, before.tier[:, Rule.HIGH], before.tier[:, Rule.LOW], sides)
    note_member_changes(sub_pos, work, changes)
    votes = vote_transitions(rules, rows, changes)
    return Step(
        transitions=Transitions.concat([*out, votes]).sorted(),
        delta=StateDelta(index.astype(np.intp), work, compact_changed(before, work)),
        derived=ReadingBatch.empty(),
    )
