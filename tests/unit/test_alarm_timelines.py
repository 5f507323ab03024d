"""Per-rule timelines with the DOMAIN.md defaults of the catalogue. Each timeline runs through
the engine and the reference, which must agree; the expected transitions are written out."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from alerting import engine
from alerting.reference import Reference
from alerting.rules import DeriveRule, VoteSpec, compile_rules, sensor_rules
from alerting.state import EngineState
from hazwatch.catalog import kind_spec
from hazwatch.domain import ReadingBatch
from hazwatch.rulespec import RuleSpec

S = 1_000_000
T0 = 1_790_000_000 * S
NAN = math.nan
Op = tuple[str, object]  # ("read", [(t_s, value[, quality])...]) or ("tick", t_s)


def reads(*rows: tuple[float, ...]) -> Op:
    return ("read", list(rows))


def tick(t_s: float) -> Op:
    return ("tick", t_s)


def timeline(
    kind: str,
    ops: Sequence[Op],
    *,
    params: dict[str, float] | None = None,
    overrides: RuleSpec | None = None,
    sensors: int = 1,
    votes: Sequence[VoteSpec] = (),
) -> list[tuple[str, int, float, int, int]]:
    """(rule, sensor, t in s, from, to) of every transition; engine and reference agree."""
    spec = kind_spec(kind)
    rules_spec = spec.default_rules(params or {}).overlay(overrides)
    rules = compile_rules(
        [sensor_rules(i + 1, rules_spec, spec.period_s) for i in range(sensors)], votes=votes
    )
    reference = Reference(rules)
    state = EngineState.empty(rules.n, rules.history_len)
    out = []
    for op, arg in ops:
        if op == "tick":
            now = T0 + round(float(arg) * S)  # type: ignore[arg-type]
            expected = reference.tick(now)
            step = engine.tick(rules, state, now)
        else:
            rows = arg  # type: ignore[assignment]
            batch = ReadingBatch.from_columns(
                [int(r[3]) if len(r) > 3 else 1 for r in rows],  # type: ignore[union-attr, index, arg-type]
                [T0 + round(r[0] * S) for r in rows],  # type: ignore[index]
                [r[1] for r in rows],  # type: ignore[index]
                [int(r[2]) if len(r) > 2 else 0 for r in rows],  # type: ignore[arg-type, index]
            )
            expected = reference.evaluate(batch)
            step = engine.evaluate(rules, state, batch)
        got = step.transitions.to_list()
        assert [(*t[:5], t.predicted) for t in got] == [(*t[:5], t.predicted) for t in expected]
        state = state.updated(step.delta)
        out += [(t.rule.label, t.subject, (t.ts_us - T0) / S, t.from_tier, t.to_tier) for t in got]
    return out


def every(start: int, stop: int, step: int, value: float) -> list[tuple[float, float]]:
    return [(float(t), value) for t in range(start, stop, step)]


def test_co_tiers_with_on_delay_red_at_once_deadband_and_release_dwell() -> None:
    # CO: 24/40/80/160 ppm, deadband 2, on-delay 10 s, red immediate, off-delay 300 s.
    got = timeline("co", [
        reads(*every(0, 20, 5, 30.0)),  # blue after 10 s
        reads(*every(20, 40, 5, 45.0)),  # yellow after 10 s
        reads((40.0, 170.0)),  # red at once
        reads((45.0, 23.0), (50.0, 23.0)),  # below 24 but inside the deadband: blue holds
        reads(*every(55, 400, 5, 5.0)),
    ])  # fmt: skip
    assert [g for g in got if g[0] == "high"] == [
        ("high", 0, 10.0, 0, 1),
        ("high", 0, 30.0, 1, 2),
        ("high", 0, 40.0, 2, 4),
        ("high", 0, 345.0, 4, 1),  # red, orange and yellow reset at 45 s: released 300 s later
        ("high", 0, 355.0, 1, 0),  # blue reset at 55 s (5 ppm < 24 - 2)
    ]


def test_co_excursion_shorter_than_the_on_delay_raises_nothing() -> None:
    got = timeline("co", [reads((0.0, 2.0), (5.0, 50.0), (10.0, 2.0), (15.0, 2.0))])
    assert [g for g in got if g[0] == "high"] == []


def test_combustible_gas_percent_lel_and_its_rate_rule() -> None:
    # %LEL: 10/20/25/50; rise >= 5 %LEL/min over 60 s raises the rate rule's yellow.
    ramp = [(float(t), 1.0 + t * 0.1) for t in range(0, 125, 5)]  # 6 %LEL/min
    got = timeline("combustible_gas", [reads(*ramp)])
    assert ("rate", 0, 30.0, 0, 2) in got  # the 60 s window is half covered at 30 s
    assert [g for g in got if g[0] == "high"] == [("high", 0, 100.0, 0, 1)]  # 11 %LEL at 100 s


def test_electric_field_magnitude_and_thirty_minute_dwell() -> None:
    # |E|: 2/4/5/8 kV/m, no on-delay, release after 30 min below the limit minus 1.5.
    got = timeline("electric_field", [
        reads((0.0, -4.5)),  # a negative field counts by its magnitude: yellow
        reads((60.0, 1.0)),  # below 2 - 1.5? no (1.0 >= 0.5): blue holds; yellow resets
        reads((1860.0, 1.0)),  # 30 min after 60 s: yellow released, blue still on
        reads((1900.0, 0.2)),  # below 0.5: blue resets
        tick(3700.0),  # 30 min later: released
    ])  # fmt: skip
    assert [g for g in got if g[0] == "high"] == [
        ("high", 0, 0.0, 0, 2),
        ("high", 0, 1860.0, 2, 1),
        ("high", 0, 3700.0, 1, 0),
    ]


def test_piston_tilt_relative_to_the_design_allowable() -> None:
    # Tilt tiers at 50/70/85/100 % of 80 mm: 40/56/68/80 mm; on-delay 5 s.
    got = timeline("piston_tilt", [reads(*every(0, 20, 5, 60.0))],
                   params={"design_allowable_mm": 80.0})  # fmt: skip
    assert [g for g in got if g[0] == "high"] == [("high", 0, 5.0, 0, 2)]


def test_lightning_is_an_event_stream_held_for_twenty_minutes() -> None:
    # Distance ↓: 30/15/10/5 km; a flash counts for 20 min (hold_s=1200); no stale rule.
    got = timeline("lightning_distance", [
        reads((0.0, 12.0)),  # yellow (<= 15 km)
        reads((600.0, 4.0)),  # red (<= 5 km)
        reads((900.0, 25.0)),  # a far flash: renews blue only
        tick(1799.0),
        tick(1800.0),  # red, orange, yellow set at 600 s expire: blue from 900 s remains
        tick(2100.0),  # blue expires 1200 s after 900 s
        tick(9000.0),  # silence is normal for an event stream: no stale alarm
    ])  # fmt: skip
    assert got == [
        ("low", 0, 0.0, 0, 2),
        ("low", 0, 600.0, 2, 4),
        ("low", 0, 1800.0, 4, 1),
        ("low", 0, 2100.0, 1, 0),
    ]


def test_stale_then_offline_on_the_timer_without_new_data() -> None:
    # CO: period 10 s, stale after 3 x 10 s (blue), offline after 600 s (yellow).
    got = timeline("co", [reads((0.0, 3.0)), tick(29.0), tick(30.0), tick(700.0),
                          reads((710.0, 3.0))])  # fmt: skip
    assert got == [
        ("stale", 0, 30.0, 0, 1),
        ("stale", 0, 600.0, 1, 2),
        ("stale", 0, 710.0, 2, 0),
    ]


def test_bad_quality_raises_its_tier_and_is_kept_out_of_thresholds() -> None:
    got = timeline("co", [
        reads((0.0, 3.0), (5.0, NAN, 66), (10.0, 500.0, 65)),  # comm timeout, detector fault
        reads((15.0, 500.0, 17), (20.0, 500.0, 16)),  # calibration gas: no alarm
        reads((25.0, 3.0)),
    ])  # fmt: skip
    assert got == [("quality", 0, 5.0, 0, 4), ("quality", 0, 15.0, 4, 0)]


def test_a_late_reading_is_stored_but_does_not_roll_the_state_back() -> None:
    got = timeline("co", [
        reads((100.0, 200.0)),  # red at once
        reads((50.0, 0.0), (60.0, 0.0)),  # older than the sensor's clock: ignored
        reads((105.0, 200.0)),
    ])  # fmt: skip
    assert [g for g in got if g[0] == "high"] == [("high", 0, 100.0, 0, 4)]


def test_trend_predicts_the_next_tier_before_it_is_reached() -> None:
    # CO rising 3 ppm per 10 s (18 ppm/min): the 300 s window is half covered at 150 s, when
    # x = 50 ppm and the next tier (orange, 80 ppm) is 10 min away at most.
    ramp = [(float(t), 5.0 + 0.3 * t) for t in range(0, 300, 10)]
    got = timeline("co", [reads(*ramp)])
    trend = [g for g in got if g[0] == "trend"]
    assert trend[0] == ("trend", 0, 150.0, 0, 3)
    first_orange = next(g for g in got if g[0] == "high" and g[4] == 3)
    assert first_orange[2] > trend[0][2]


def test_pipeline_pressure_low_side_relative_to_the_set_point() -> None:
    params = {"setpoint_mpa": 0.3, "mop_mpa": 0.4, "min_supply_mpa": 0.2}
    # Low limits 0.285/0.27/0.24/0.2 MPa, on-delay 20 s: 0.25 MPa is yellow.
    got = timeline("pipeline_pressure", [reads(*every(0, 30, 10, 0.25))], params=params)
    assert [g for g in got if g[0] == "low"] == [("low", 0, 20.0, 0, 2)]


def test_two_detectors_at_yellow_vote_the_group_to_orange() -> None:
    vote = VoteSpec("ring", 1, (0, 1, 2), k=2, at=2)
    rows = [(float(t), 45.0, 0, 1) for t in range(0, 30, 5)]
    rows += [(float(t), 45.0, 0, 2) for t in range(3, 30, 5)]
    got = timeline("co", [reads(*rows)], sensors=3, votes=[vote])
    assert ("vote", 0, 13.0, 0, 3) in got


def test_derived_piston_speed_from_level() -> None:
    level = kind_spec("holder_level")
    speed = kind_spec("piston_speed").default_rules({"design_max_m_per_min": 1.5})
    rules = compile_rules(
        [sensor_rules(1, level.default_rules({}), 2.0), sensor_rules(2, speed, 2.0)],
        derives=[DeriveRule(1, "rate", (0,), scale=0.6, window_us=30 * S)],
    )
    batch = ReadingBatch.from_columns(
        [1] * 20, [T0 + t * 2 * S for t in range(20)], [40.0 + 0.1 * t for t in range(20)],
        [0] * 20,
    )  # fmt: skip
    step = engine.evaluate(rules, EngineState.empty(2, rules.history_len), batch)
    # 0.1 % per 2 s = 3 %/min x 0.6 m per % = 1.8 m/min: above 1.2 x 1.5 = red.
    assert step.derived.value[-1] == pytest.approx(1.8)
    assert step.derived.ts_us[0] == T0 + 16 * S  # the first covered window: 15 s of 30
    assert [t.to_tier for t in step.transitions.to_list() if t.subject == 1][-1] == 4
