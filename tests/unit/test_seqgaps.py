"""Sequence-gap detection: late messages fill gaps, what stays missing is reported once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingest.seqgaps import MAX_RANGES, Gap, SeqGapTracker


def test_a_jump_is_reported_after_the_grace_period_only() -> None:
    t = SeqGapTracker(grace_s=30)
    for seq in (1, 2, 3, 7, 8):
        t.observe("d", seq, now_s=100)
    assert t.open_gaps("d") == [(4, 6)]
    assert t.due(129.9) == []
    assert t.due(130) == [Gap("d", ((4, 6),), 100)]
    assert t.due(1000) == []  # reported once


def test_late_and_redelivered_messages_fill_their_place() -> None:
    t = SeqGapTracker(grace_s=30)
    for seq in (1, 5, 3, 3, 2):
        t.observe("d", seq, now_s=0)
    assert t.open_gaps("d") == [(4, 4)]
    t.observe("d", 4, now_s=10)
    assert t.due(100) == []


def test_devices_are_apart_and_unnumbered_messages_ignored() -> None:
    t = SeqGapTracker(grace_s=1)
    t.observe("a", 1, 0)
    t.observe("b", 10, 0)
    t.observe("a", 3, 0)
    t.observe("b", -1, 0)
    t.observe("b", 11, 0)
    assert t.due(5) == [Gap("a", ((2, 2),), 0)]


def test_a_restarted_device_starts_afresh_and_what_it_still_missed_is_reported_at_once() -> None:
    t = SeqGapTracker(grace_s=30)
    t.observe("d", 5000, 0)
    t.observe("d", 5003, 0)  # 5001..5002 missing
    assert t.observe("d", 0, 1) == [Gap("d", ((5001, 5002),), 0)]  # restarted from 0
    t.observe("d", 1, 1)
    assert t.open_gaps("d") == []
    assert t.due(100) == []


@given(st.lists(st.integers(0, 300), min_size=1, max_size=200))
def test_reported_gaps_are_exactly_the_numbers_never_seen(seqs: list[int]) -> None:
    """For any arrival order within one device's run (no restart), the union of reported gaps is
    every number between the first seen and the highest that never arrived."""
    t = SeqGapTracker(grace_s=1)
    first = seqs[0]
    for seq in seqs:
        t.observe("d", seq, 0)
    reports = t.due(10)
    assert len(reports) <= 1  # one report per device
    reported = {n for g in reports for a, b in g.ranges for n in range(a, b + 1)}
    seen = set(seqs)
    expected = {n for n in range(first, max(seqs) + 1) if n not in seen}
    assert reported == expected


def test_a_device_with_many_gaps_gets_one_report_per_call_covering_only_due_ranges() -> None:
    """A device that numbers its messages in steps of 100 (a misconfigured counter) opens a gap
    with every message: it is reported as one record per device, not one per message."""
    t = SeqGapTracker(grace_s=30)
    for i in range(50):
        t.observe("d", i * 100, now_s=float(i))
    (gap,) = t.due(40.0)  # gaps opened at 1..10 s are due; those from 11 s on are not yet
    assert gap.ranges == tuple((k * 100 + 1, k * 100 + 99) for k in range(10))
    assert (gap.first_seq, gap.last_seq, gap.missing, gap.opened_at_s) == (1, 999, 990, 1.0)
    assert t.open_gaps("d")[0] == (1001, 1099)
    assert len(t.due(1000.0)[0].ranges) == 39


def test_late_fills_split_ranges_without_exceeding_the_cap() -> None:
    """Late messages inside one big jump split it; the ranges kept stay within MAX_RANGES, the
    surplus is reported early, and together they are exactly the numbers never seen."""
    t = SeqGapTracker(grace_s=30)
    t.observe("d", 0, 0)
    t.observe("d", 100_000, 0)  # 1..99,999 missing: one range
    early = []
    for seq in range(2, 5_000, 2):  # every other number arrives late: a split each time
        early += t.observe("d", seq, 1)
    kept = t.open_gaps("d")
    assert len(kept) == MAX_RANGES
    ranges = [r for g in early for r in g.ranges] + kept
    assert ranges == sorted(ranges)  # the oldest (lowest) went first
    never_seen = {n for n in range(1, 100_000) if n >= 5_000 or n % 2}
    assert {n for a, b in ranges for n in range(a, b + 1)} == never_seen
