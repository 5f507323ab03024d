"""Scenario files: the packaged ones load and keep their promises; bad ones fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazwatch.domain import Tier
from hazwatch.errors import ScenarioError
from hazwatch.registry.parse import load_registry
from simulators import expectations
from simulators.plant import Plant
from simulators.scenario import check_targets, load_scenario, packaged_scenarios, parse_scenario
from simulators.simulation import Simulation

ROOT = Path(__file__).resolve().parents[2]
START = 1_795_852_800_000


@pytest.fixture(scope="module")
def plant() -> Plant:
    return Plant.from_registry(load_registry(ROOT / "deploy/demo/anshan.yaml"))


def judge(plant: Plant, name: str, seed: int) -> list[expectations.Result]:
    plan = load_scenario(name)
    length_ms = round(max(e.by_s for e in plan.expect) * 1000) + 1000
    sim = Simulation(plant, seed=seed, start_ms=START, scenario=plan)
    return expectations.check(
        plant, plan, sim.run(length_ms), start_ms=START, end_ms=START + length_ms
    )


def test_every_packaged_scenario_loads_and_fits_the_demo_city(plant: Plant) -> None:
    names = packaged_scenarios()
    assert {"demo", "quiet", "storm", "bleed", "leak", "silence", "faults"} <= set(names)
    for name in names:
        plan = load_scenario(name)
        assert plan.name == name
        check_targets(plan, plant)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_shows_all_four_colours_in_four_minutes(plant: Plant, seed: int) -> None:
    results = judge(plant, "demo", seed)
    missed = [str(r) for r in results if not r.met]
    assert not missed
    early = {r.expectation.tier for r in results if r.met_at_s is not None and r.met_at_s <= 240}
    assert early == {Tier.BLUE, Tier.YELLOW, Tier.ORANGE, Tier.RED}


@pytest.mark.parametrize("name", ["bleed", "leak", "silence", "faults", "storm"])
def test_story_scenarios_keep_their_promises(plant: Plant, name: str) -> None:
    missed = [str(r) for r in judge(plant, name, 0) if not r.met]
    assert not missed


def test_quiet_promises_nothing_and_raises_nothing(plant: Plant) -> None:
    assert load_scenario("quiet").events == ()


def test_a_promise_that_does_not_happen_is_reported(plant: Plant) -> None:
    plan = parse_scenario("name: x\nexpect: [{sensor: ps4/pressure, tier: red, by_s: 60}]")
    sim = Simulation(plant, seed=0, start_ms=START, scenario=plan)
    (result,) = expectations.check(
        plant, plan, sim.run(60_000), start_ms=START, end_ms=START + 60_000
    )
    assert not result.met
    assert "MISSED" in str(result)


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="bad.yaml")
    assert info.value.source == "bad.yaml"
    return [str(p) for p in info.value.problems]


def test_unknown_event_kind_is_named_with_its_line() -> None:
    (problem,) = problems("name: bad\nevents:\n  - {kind: earthquake, at_s: 5}\n")
    assert "line 3" in problem
    assert "events[0]" in problem
    assert "earthquake" in problem


def test_missing_and_wrong_fields_are_all_reported() -> None:
    found = problems(
        "name: bad\nevents:\n"
        "  - {kind: bleed, at_s: 5}\n"
        "  - {kind: leak, asset: main, leak_pct: lots, segment: 1}\n"
        "  - {kind: spike, sensors: [a/b], magnitude: 1, at_s: -3}\n"
    )
    text = "\n".join(found)
    assert "events[0].asset" in text
    assert "Field required" in text
    assert "events[1].leak_pct" in text
    assert "events[2].at_s" in text
    assert len(found) == 3


def test_targetless_and_ambiguous_events_are_refused() -> None:
    assert any(
        "name at least one target" in p for p in problems("name: b\nevents: [{kind: fault}]")
    )
    text = "\n".join(problems("name: b\nevents: [{kind: storm, site: a, asset: b}]"))
    assert "exactly one of site or asset" in text


def test_bad_yaml_gives_a_line() -> None:
    (problem,) = problems("name: b\nevents: [\n")
    assert "line" in problem


def test_unknown_targets_are_listed_against_the_registry(plant: Plant) -> None:
    plan = parse_scenario(
        "name: b\nevents:\n"
        "  - {kind: silence, devices: [nope]}\n"
        "  - {kind: leak, asset: coalgas-main, segment: 9}\n"
        "  - {kind: plume, sensors: [ps4/pressure], peak: 10}\n"
        "  - {kind: bleed, asset: coalgas-main}\n"
        "expect: [{sensor: ghost/co, tier: red, by_s: 5}]\n"
    )
    with pytest.raises(ScenarioError) as info:
        Simulation(plant, seed=0, start_ms=START, scenario=plan)
    text = str(info.value)
    assert "unknown device 'nope'" in text
    assert "has 5 segments; 9 is not one" in text
    assert "ps4/pressure is not a gas detector" in text
    assert "no gas-holder sensors" in text
    assert "unknown sensor 'ghost/co'" in text


def test_unknown_packaged_name_lists_the_known_ones() -> None:
    with pytest.raises(ScenarioError, match="packaged: bleed, demo"):
        load_scenario("dmeo")


def test_scenario_file_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nevents: [{kind: drift, sensors: [a/b], rate_per_min: 1}]\n")
    assert load_scenario(path).name == "mine"
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "absent.yaml")
