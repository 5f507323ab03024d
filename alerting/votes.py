"""Votes: k of an asset's listed sensors at a tier raise the asset's vote alarm one tier.

A member's tier is the max of its high and low tiers. The engine collects every change of a
member's tier (`member_changes`), then each vote replays its members' changes in time order,
never before its clock (the latest member change it had seen): `vote_transitions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from alerting.levels import SideTransitions
from alerting.rules import CompiledRules, Rule
from alerting.segments import IntArray, first_of_segment, last_true_index, shift_in_segment
from alerting.state import NEVER, Rows
from alerting.transitions import Transitions


@dataclass(frozen=True, slots=True)
class MemberChanges:
    """Changes of max(high, low) tier: sensor position, time, new tier; by (position, time)."""

    pos: npt.NDArray[np.int32]
    ts: IntArray
    tier: npt.NDArray[np.int8]

    @classmethod
    def empty(cls) -> MemberChanges:
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8))

    @classmethod
    def concat(cls, parts: list[MemberChanges]) -> MemberChanges:
        parts = [p for p in parts if len(p.pos)]
        if not parts:
            return cls.empty()
        pos = np.concatenate([p.pos for p in parts])
        ts = np.concatenate([p.ts for p in parts])
        tier = np.concatenate([p.tier for p in parts])
        order = np.lexsort((ts, pos))
        return cls(pos[order], ts[order], tier[order])

    def last_per_sensor(self) -> tuple[npt.NDArray[np.int32], IntArray]:
        """Each sensor's latest change time."""
        last = np.ones(len(self.pos), dtype=np.bool_)
        last[:-1] = self.pos[1:] != self.pos[:-1]
        return self.pos[last], self.ts[last]


def member_changes(
    spos: npt.NDArray[np.int32],
    high0: npt.NDArray[np.int8],
    low0: npt.NDArray[np.int8],
    sides: Mapping[int, SideTransitions],
) -> MemberChanges:
    """Member tier changes of segments (`spos`, carried tiers) from their side transitions."""
    present = [(side, st) for side, st in sides.items() if len(st.seg)]
    if not present:
        return MemberChanges.empty()
    seg = np.concatenate([st.seg for _, st in present])
    ts = np.concatenate([st.ts for _, st in present])
    side_of = np.concatenate([np.full(len(st.seg), side, np.int8) for side, st in present])
    to = np.concatenate([st.to_tier for _, st in present])
    order = np.lexsort((side_of, ts, seg))
    seg, ts, side_of, to = seg[order], ts[order], side_of[order], to[order]
    first = first_of_segment(seg)
    tiers = []
    for side, carried in ((0, high0), (1, low0)):
        last = last_true_index(side_of == side, first)
        tiers.append(np.where(last >= 0, to[np.maximum(last, 0)], carried[seg]))
    member = np.maximum(tiers[0], tiers[1]).astype(np.int8)
    group_last = np.ones(len(seg), dtype=np.bool_)
    group_last[:-1] = (seg[1:] != seg[:-1]) | (ts[1:] != ts[:-1])
    g_seg, g_ts, g_member = seg[group_last], ts[group_last], member[group_last]
    before = shift_in_segment(
        g_member, first_of_segment(g_seg), np.maximum(high0, low0)[g_seg].astype(np.int8)
    )
    moved = g_member != before
    return MemberChanges(spos[g_seg[moved]], g_ts[moved], g_member[moved])


def vote_transitions(rules: CompiledRules, before: Rows, changes: MemberChanges) -> Transitions:
    """Transitions of every vote, given the state before and the members' changes."""
    votes = rules.votes
    if not votes or not len(changes.pos):
        return Transitions.empty()
    member_vote = np.concatenate([np.full(len(v.members), i) for i, v in enumerate(votes)])
    member_pos = np.concatenate([np.array(v.members, dtype=np.int64) for v in votes])
    at = np.array([v.at for v in votes], dtype=np.int8)
    k = np.array([v.k for v in votes], dtype=np.int64)
    tier0_member = np.maximum(before.tier[:, Rule.HIGH], before.tier[:, Rule.LOW])
    in0 = tier0_member[member_pos] >= at[member_vote]
    count0 = np.bincount(member_vote, weights=in0, minlength=len(votes)).astype(np.int64)
    clock0 = np.full(len(votes), NEVER, dtype=np.int64)
    np.maximum.at(clock0, member_vote, before.member_ts[member_pos])
    # Expand each change to the votes its sensor is a member of.
    by_pos = np.argsort(member_pos, kind="stable")
    sorted_pos = member_pos[by_pos]
    lo = np.searchsorted(sorted_pos, changes.pos, side="left")
    hi = np.searchsorted(sorted_pos, changes.pos, side="right")
    reps = hi - lo
    if not reps.sum():
        return Transitions.empty()
    change_of = np.repeat(np.arange(len(changes.pos)), reps)
    offsets = np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)
    member = by_pos[np.repeat(lo, reps) + offsets]
    vote = member_vote[member]
    ts = changes.ts[change_of]
    now_in = changes.tier[change_of] >= at[vote]
    # Previous membership of the same (vote, member): the member's earlier change, or in0.
    order = np.lexsort((ts, member))  # members are distinct per (vote, sensor)
    m_sorted = member[order]
    first_m = first_of_segment(m_sorted)
    prev_in = shift_in_segment(now_in[order], first_m, in0[m_sorted])
    delta = np.empty(len(order), dtype=np.int64)
    delta[order] = now_in[order].astype(np.int64) - prev_in.astype(np.int64)
    # Replay per vote in time order, at the vote's clock or later.
    order = np.lexsort((ts, vote))
    vote, ts, delta = vote[order], ts[order], delta[order]
    eff = np.maximum(ts, clock0[vote])
    first_v = first_of_segment(vote)
    running = np.cumsum(delta)
    seg_base = (running - delta)[first_v]
    count = (
        count0[vote]
        + running
        - np.repeat(seg_base, np.diff(np.append(np.flatnonzero(first_v), len(vote))))
    )
    group_last = np.ones(len(vote), dtype=np.bool_)
    group_last[:-1] = (vote[1:] != vote[:-1]) | (eff[1:] != eff[:-1])
    g_vote, g_eff, g_count = vote[group_last], eff[group_last], count[group_last]
    g_tier = np.where(g_count >= k[g_vote], at[g_vote] + 1, 0).astype(np.int8)
    tier0 = np.where(count0 >= k, at + 1, 0).astype(np.int8)
    before_tier = shift_in_segment(g_tier, first_of_segment(g_vote), tier0[g_vote])
    moved = g_tier != before_tier
    return Transitions.build(
        Rule.VOTE, g_vote[moved], g_eff[moved], before_tier[moved], g_tier[moved],
        g_count[moved].astype(np.float64), False,
    )  # fmt: skip
