"""Compiling rule specs: units, defaults with overrides, and combinations refused."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from alerting.rules import RuleCompileError, compile_rules, sensor_rules
from hazwatch.catalog import kind_spec
from hazwatch.errors import RegistryError
from hazwatch.registry.parse import parse_registry
from hazwatch.rulespec import RuleSpec, TierLimits

MINIMAL = (Path(__file__).parents[1] / "fixtures" / "registry" / "minimal.yaml").read_text()


def test_co_defaults_in_engine_units() -> None:
    r = sensor_rules(7, kind_spec("co").default_rules({}), 10.0)
    assert r.high == (24, 40, 80, 160)
    assert r.on_delay_us == (10_000_000, 10_000_000, 10_000_000, 0)  # red at once
    assert r.off_delay_us == 300_000_000
    assert r.stale is not None
    assert r.stale.after_us == 30_000_000  # 3 x the 10 s period
    assert r.quality_tier == 4


def test_override_replaces_a_side_and_keeps_the_rest() -> None:
    spec = (
        kind_spec("co")
        .default_rules({})
        .overlay(RuleSpec(high=TierLimits(yellow=30.0, red=100.0), on_delay_s=0.0))
    )
    r = sensor_rules(1, spec, 10.0)
    assert r.high == (None, 30.0, None, 100.0)
    assert r.on_delay_us == (0, 0, 0, 0)
    assert r.deadband == 2.0
    rules = compile_rules([r])
    assert math.isnan(rules.limit[0, 0])
    assert rules.limit[1, 0] == 30.0
    assert rules.reset[1, 0] == 28.0  # limit - deadband
    assert rules.rest[0, 0] == 28.0  # below this every high level is reset


def test_disabled_sensor_has_no_rules() -> None:
    r = sensor_rules(1, kind_spec("co").default_rules({}).overlay(RuleSpec(enabled=False)), 10.0)
    rules = compile_rules([r])
    assert not rules.side_on.any()
    assert rules.stale_after_us[0] == 0
    assert rules.quality_tier[0] == 0


def test_piston_speed_limits_apply_both_ways() -> None:
    r = sensor_rules(1, kind_spec("piston_speed").default_rules({"design_max_m_per_min": 1.5}), 1.0)
    assert r.magnitude
    assert r.high == (None, pytest.approx(1.2), 1.5, pytest.approx(1.8))


def test_hold_with_delays_is_refused_by_the_registry_and_the_compiler() -> None:
    spec = kind_spec("lightning_distance").default_rules({}).overlay(RuleSpec(on_delay_s=5.0))
    with pytest.raises(RuleCompileError, match="hold_s"):
        sensor_rules(1, spec, None)
    text = MINIMAL.replace(
        "{channel: co2, kind: co}",
        "{channel: co2, kind: lightning_distance, rules: {off_delay_s: 60}}",
    ).replace("[gh1-det/co1, gh1-det/co2, gh1-det/co3]", "[gh1-det/co1, gh1-det/co3]")
    with pytest.raises(RegistryError, match="hold_s"):
        parse_registry(text)


def test_unknown_sensor_ids_map_to_minus_one() -> None:
    rules = compile_rules([sensor_rules(i, RuleSpec(), None) for i in (3, 9)])
    ids = np.array([9, 3, 4, 100, -1], dtype=np.int32)
    assert rules.positions(ids).tolist() == [1, 0, -1, -1, -1]


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(RuleCompileError, match="twice"):
        compile_rules([sensor_rules(1, RuleSpec(), None), sensor_rules(1, RuleSpec(), None)])
