"""The registry file: a valid file parses; each kind of mistake is reported with its path."""

from __future__ import annotations

from pathlib import Path

import pytest

from hazwatch.domain import Tier
from hazwatch.errors import RegistryError
from hazwatch.registry.parse import load_registry, parse_registry

FIXTURES = Path(__file__).parent.parent / "fixtures" / "registry"
MINIMAL = (FIXTURES / "minimal.yaml").read_text()


def problems(text: str) -> list[str]:
    with pytest.raises(RegistryError) as info:
        parse_registry(text, source="t.yaml")
    return [str(p) for p in info.value.problems]


def test_minimal_file_parses_with_defaults() -> None:
    reg = load_registry(FIXTURES / "minimal.yaml")
    site = reg.sites[0]
    holder = site.assets[0]
    assert holder.effective_static_risk is Tier.ORANGE  # R = 62 is GB 18218 level II
    co3 = site.devices[1].sensors[2]
    assert co3.effective_unit == "ppm"
    assert co3.effective_range == (0, 1000)
    rules = co3.effective_rules()
    assert rules.high is not None and rules.high.blue == 20  # override
    assert rules.on_delay_s == 10.0  # default kept
    pressure = site.devices[0].sensors[1].effective_rules()
    assert pressure.high is not None and pressure.high.red == pytest.approx(3.3)


def test_the_demo_city_is_valid() -> None:
    reg = load_registry(Path(__file__).parents[2] / "deploy" / "demo" / "anshan.yaml")
    measured = sum(len(d.sensors) for s in reg.sites for d in s.devices)
    assert len(reg.sites) >= 2
    assert measured >= 60
    protocols = {d.protocol for s in reg.sites for d in s.devices}
    assert protocols == {"mqtt", "modbus"}


def test_unknown_kind_is_reported_with_path_and_line() -> None:
    text = MINIMAL.replace("{channel: co2, kind: co}", "{channel: co2, kind: carbon}")
    (found,) = problems(text)
    assert "sites[0].devices[1].sensors[1]" in found
    assert "unknown sensor kind 'carbon'" in found
    assert found.startswith("line 36:")


def test_every_problem_is_reported_at_once() -> None:
    text = (
        MINIMAL.replace("{channel: co2, kind: co}", "{channel: co2, kind: carbon}")
        .replace("{channel: co1, kind: co}", "{channel: co1, kind: co, unit: ppb}")
        .replace("{address: 40003, type: float32}", "{address: 40003, type: float33}")
    )
    found = problems(text)
    assert len(found) == 3
    assert any("unknown unit 'ppb'" in p for p in found)
    assert any("devices[0].sensors[1].modbus.type" in p for p in found)


def test_duplicate_sensor_key() -> None:
    text = MINIMAL.replace("{channel: co2, kind: co}", "{channel: co1, kind: co}")
    found = problems(text)
    assert any("duplicate sensor key 'gh1-det/co1'" in p for p in found)
    assert any("unknown sensor 'gh1-det/co2' in vote 'co-ring'" in p for p in found)


def test_duplicate_yaml_mapping_key() -> None:
    text = MINIMAL.replace("name: Holder 1", "name: Holder 1\n        name: Holder one")
    (found,) = problems(text)
    assert "duplicate key 'name'" in found


def test_min_above_max() -> None:
    text = MINIMAL.replace("{channel: co1, kind: co}", "{channel: co1, kind: co, range: [50, 5]}")
    (found,) = problems(text)
    assert "range min 50.0 must be below max 5.0" in found


def test_unknown_references() -> None:
    text = MINIMAL.replace("inputs: [gh1-plc/level]", "inputs: [gh1-plc/levle]").replace(
        "asset: gh1\n        protocol: mqtt", "asset: gh9\n        protocol: mqtt"
    )
    found = problems(text)
    assert any("unknown input sensor 'gh1-plc/levle'" in p for p in found)
    assert any("devices[1].asset: unknown asset 'gh9'" in p for p in found)


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ("{address: 30001, type: float32}", "not read by FC 3"),
        ("{address: 40001, type: float32, fc: 1}", "type must be bool"),
        ("{address: 40002, type: uint16}", "register 1 is also read as float32"),
        ("{address: 40001, type: bits}", "type bits needs a mask"),
        ("{address: 40001, type: float32, group: slow}", "unknown poll group 'slow'"),
    ],
)
def test_bad_register_maps(point: str, message: str) -> None:
    text = MINIMAL.replace("{address: 40003, type: float32}", point)
    found = problems(text)
    assert any(message in p for p in found), found


def test_relative_kind_without_its_design_value() -> None:
    text = MINIMAL.replace("            params: {design_kpa: 3.0}\n", "")
    (found,) = problems(text)
    assert "kind holder_pressure needs params: design_kpa" in found


def test_limits_out_of_order() -> None:
    text = MINIMAL.replace("{blue: 20, yellow: 40, orange: 80, red: 160}", "{blue: 50, yellow: 40}")
    (found,) = problems(text)
    assert "high limits must not fall" in found


def test_malformed_yaml_names_the_line() -> None:
    (found,) = problems("version: 1\nsites:\n  - key: [unclosed\n")
    assert found.startswith("line ")
