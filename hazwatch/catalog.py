"""The sensor catalogue: each sensor kind's unit, physical range, period and default rules.

The numbers are the defaults of ../shared/DOMAIN.md (Chinese standards where they give a number,
engineering proposals where they do not); every one can be overridden per sensor in the registry.
Kinds whose limits are relative to a design value (pipeline set point, holder design pressure,
allowable tilt) name that value in `params`: the registry must give it for each such sensor.
Kinds whose limits belong to the enterprise DCS (tank level, temperature, pressure) have no
defaults at all: the registry must carry the plant's own set points.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from hazwatch.domain import Tier
from hazwatch.rulespec import QualityRule, RateRule, RuleSpec, StaleRule, TierLimits, TrendRule

UNITS = frozenset(
    {
        "%LEL", "ppm", "%VOL", "MPa", "kPa", "m3/h", "%", "m/min", "mm", "kV/m", "km", "degC",
        "m", "m3", "state", "code",
    }
)  # fmt: skip

Params = Mapping[str, float]


def _fixed(spec: RuleSpec) -> Callable[[Params], RuleSpec]:
    return lambda _params: spec


@dataclass(frozen=True, slots=True)
class KindSpec:
    kind: str
    unit: str
    description: str
    range_min: float
    range_max: float
    period_s: float | None  # None: an event stream, silence is normal
    defaults: Callable[[Params], RuleSpec]
    params: tuple[str, ...] = ()
    needs_plant_limits: bool = False  # no default thresholds: the registry must give them
    derived_only: bool = False
    notes: str = ""
    extra_units: frozenset[str] = field(default_factory=frozenset)

    @property
    def units(self) -> frozenset[str]:
        return self.extra_units | {self.unit}

    def default_rules(self, params: Params) -> RuleSpec:
        missing = [p for p in self.params if p not in params]
        if missing:
            raise KeyError(f"kind {self.kind} needs params {', '.join(missing)}")
        return self.defaults(params)


_STALE = StaleRule()
_QUALITY = QualityRule(tier=Tier.RED)
# Informational signals: no limits of their own, but silence and bad quality still show.
_INFORMATIONAL = RuleSpec(stale=_STALE, quality=QualityRule(tier=Tier.BLUE))

_GAS_COMMON = {
    "deadband": 2.0,
    "on_delay_s": 10.0,  # two to three samples at the usual 5 s upload
    "off_delay_s": 300.0,  # release after a five-minute dwell (gas practice)
    "red_immediate": True,
    "stale": _STALE,
    "quality": _QUALITY,
}


def _gas(blue: float, yellow: float, orange: float, red: float, rise: float) -> RuleSpec:
    return RuleSpec(
        high=TierLimits(blue=blue, yellow=yellow, orange=orange, red=red),
        rate=RateRule(window_s=60.0, rise_per_min=rise, tier=Tier.YELLOW),
        trend=TrendRule(window_s=300.0, horizon_s=600.0),
        **_GAS_COMMON,
    )


def _pipeline_pressure(p: Params) -> RuleSpec:
    sp, mop, minimum = p["setpoint_mpa"], p["mop_mpa"], p["min_supply_mpa"]
    # Deviation bands around the set point, never beyond the red limits (MOP, minimum supply):
    # a set point close to the MOP makes the upper bands collapse into red, not cross it.
    up = [min(sp * f, mop) for f in (1.05, 1.10, 1.20)]
    down = [max(sp * f, minimum) for f in (0.95, 0.90, 0.80)]
    return RuleSpec(
        high=TierLimits(blue=up[0], yellow=up[1], orange=up[2], red=mop),
        low=TierLimits(blue=down[0], yellow=down[1], orange=down[2], red=minimum),
        deadband=sp * 0.01,
        on_delay_s=20.0,
        off_delay_s=60.0,
        rate=RateRule(window_s=60.0, fall_per_min=sp * 0.05, tier=Tier.ORANGE),
        stale=_STALE,
        quality=QualityRule(tier=Tier.YELLOW),
    )


def _relative_high(
    basis: str, fractions: tuple[float | None, ...], *, magnitude: bool = False
) -> Callable[[Params], RuleSpec]:
    def build(p: Params) -> RuleSpec:
        b = p[basis]
        limits = [None if f is None else b * f for f in fractions]
        return RuleSpec(
            high=TierLimits(blue=limits[0], yellow=limits[1], orange=limits[2], red=limits[3]),
            magnitude=magnitude,
            deadband=b * 0.02,
            on_delay_s=5.0,
            off_delay_s=30.0,
            stale=_STALE,
            quality=QualityRule(tier=Tier.YELLOW),
        )

    return build


def _holder_pressure(p: Params) -> RuleSpec:
    d = p["design_kpa"]
    return RuleSpec(
        high=TierLimits(blue=d * 1.03, yellow=d * 1.05, orange=d * 1.08, red=d * 1.10),
        low=TierLimits(blue=d * 0.97, yellow=d * 0.95, orange=d * 0.92, red=d * 0.90),
        deadband=d * 0.005,
        on_delay_s=3.0,
        off_delay_s=30.0,
        stale=_STALE,
        quality=QualityRule(tier=Tier.YELLOW),
    )


def _seal_oil(p: Params) -> RuleSpec:
    d, safe = p["design_mm"], p["safe_seal_mm"]
    return RuleSpec(
        low=TierLimits(blue=d * 0.90, yellow=d * 0.80, orange=d * 0.70, red=safe),
        deadband=d * 0.01,
        on_delay_s=30.0,
        off_delay_s=300.0,
        rate=RateRule(window_s=60.0, fall_per_min=d * 0.05, tier=Tier.ORANGE),
        stale=_STALE,
        quality=QualityRule(tier=Tier.YELLOW),
    )


def _plant_limits(_params: Params) -> RuleSpec:
    return RuleSpec(on_delay_s=5.0, off_delay_s=30.0, stale=_STALE, quality=_QUALITY)


def _kinds() -> dict[str, KindSpec]:
    gas_notes = "GB/T 50493-2019 and GB 6222-2005; red fires without on-delay"
    kinds = [
        KindSpec("combustible_gas", "%LEL", "Combustible gas at an industrial site",
                 0, 100, 5.0, _fixed(_gas(10, 20, 25, 50, rise=5.0)), notes=gas_notes),
        KindSpec("co", "ppm", "CO in coal-gas areas (holder, pipelines, rooms)",
                 0, 1000, 10.0, _fixed(_gas(24, 40, 80, 160, rise=10.0)), notes=gas_notes),
        KindSpec("co_piston_top", "ppm", "CO on the gas-holder piston top",
                 0, 1000, 5.0, _fixed(_gas(24, 40, 80, 160, rise=10.0)), notes=gas_notes),
        KindSpec("h2s", "ppm", "Hydrogen sulphide",
                 0, 100, 5.0, _fixed(_gas(5, 7, 14, 30, rise=5.0)), notes=gas_notes),
        KindSpec("o2", "%VOL", "Oxygen in confined spaces",
                 0, 30, 10.0, _fixed(RuleSpec(
                     high=TierLimits(yellow=23.0),
                     low=TierLimits(yellow=19.5, orange=18.0, red=16.0),
                     deadband=0.3, on_delay_s=10.0, off_delay_s=300.0, red_immediate=True,
                     stale=_STALE, quality=_QUALITY))),
        KindSpec("ch4_manhole", "%LEL", "CH4 in adjacent underground spaces (battery NB-IoT)",
                 0, 100, 900.0, _fixed(RuleSpec(
                     high=TierLimits(blue=5, yellow=10, orange=20, red=35),
                     deadband=1.0, on_delay_s=0.0, off_delay_s=900.0,
                     trend=TrendRule(window_s=3600.0, horizon_s=3600.0, min_points=3),
                     stale=StaleRule(factor=3.0, offline_after_s=None),
                     quality=_QUALITY))),
        KindSpec("pipeline_pressure", "MPa", "City gas pipeline pressure (gauge)",
                 0, 4.0, 10.0, _pipeline_pressure,
                 params=("setpoint_mpa", "mop_mpa", "min_supply_mpa"),
                 notes="GB 50028 classes; red above MOP or below the minimum supply pressure"),
        KindSpec("pipeline_pressure_kpa", "kPa", "Coal-gas pipeline pressure (GB 6222 lines)",
                 0, 100.0, 10.0, _holder_pressure, params=("design_kpa",)),
        KindSpec("flow", "m3/h", "Gas flow at a metering point",
                 0, 1e6, 10.0, _fixed(_INFORMATIONAL)),
        KindSpec("flow_balance", "%", "Flow imbalance between the two ends of a segment",
                 -100, 100, 10.0, _fixed(RuleSpec(
                     high=TierLimits(blue=1, yellow=3, orange=5, red=10), magnitude=True,
                     deadband=0.5, on_delay_s=300.0, off_delay_s=300.0,
                     stale=_STALE, quality=QualityRule(tier=Tier.BLUE))),
                 derived_only=True, notes="sustained >= 5 min; volume balance detects 3-5 %"),
        KindSpec("holder_level", "%", "Gas-holder level, % of piston stroke",
                 0, 100, 2.0, _fixed(RuleSpec(
                     high=TierLimits(blue=85, yellow=88, orange=90, red=95),
                     low=TierLimits(blue=15, yellow=12, orange=10, red=5),
                     deadband=1.0, on_delay_s=4.0, off_delay_s=60.0,
                     stale=_STALE, quality=_QUALITY))),
        KindSpec("piston_speed", "m/min", "Gas-holder piston speed (measured or derived)",
                 -10, 10, 1.0,
                 # Up or down: the limits are on the speed's magnitude.
                 _relative_high("design_max_m_per_min", (None, 0.8, 1.0, 1.2), magnitude=True),
                 params=("design_max_m_per_min",)),
        KindSpec("piston_tilt", "mm", "Gas-holder piston tilt",
                 0, 1000, 5.0, _relative_high("design_allowable_mm", (0.5, 0.7, 0.85, 1.0)),
                 params=("design_allowable_mm",)),
        KindSpec("holder_pressure", "kPa", "Gas-holder internal pressure",
                 0, 20, 1.0, _holder_pressure, params=("design_kpa",)),
        KindSpec("seal_oil_level", "mm", "Seal-oil level in an oil-seal holder",
                 0, 2000, 30.0, _seal_oil, params=("design_mm", "safe_seal_mm")),
        KindSpec("electric_field", "kV/m", "Atmospheric electric field (field mill, signed)",
                 -50, 50, 1.0, _fixed(RuleSpec(
                     high=TierLimits(blue=2, yellow=4, orange=5, red=8), magnitude=True,
                     deadband=1.5,  # blue releases below 0.5 kV/m
                     on_delay_s=0.0, off_delay_s=1800.0,
                     stale=_STALE, quality=QualityRule(tier=Tier.YELLOW))),
                 notes="thresholds on |E|; 30 min dwell before release"),
        KindSpec("lightning_distance", "km", "Distance of the nearest cloud-to-ground flash",
                 0, 300, None, _fixed(RuleSpec(
                     low=TierLimits(blue=30, yellow=15, orange=10, red=5),
                     deadband=0.0, on_delay_s=0.0, off_delay_s=0.0, hold_s=1200.0,
                     quality=QualityRule(tier=Tier.BLUE))),
                 notes="event stream: a flash counts for 20 min (hold_s), silence is normal"),
        KindSpec("tank_level", "%", "Major-hazard tank level",
                 0, 100, 10.0, _plant_limits, needs_plant_limits=True),
        KindSpec("tank_temperature", "degC", "Major-hazard tank temperature",
                 -60, 200, 10.0, _plant_limits, needs_plant_limits=True),
        KindSpec("tank_pressure", "MPa", "Major-hazard tank pressure",
                 0, 10, 10.0, _plant_limits, needs_plant_limits=True,
                 extra_units=frozenset({"kPa"})),
        KindSpec("temperature", "degC", "Temperature (informational)",
                 -60, 200, 10.0, _fixed(_INFORMATIONAL)),
        KindSpec("detector_alarm", "state", "A detector's own alarm output (0 off, 1 on)",
                 0, 1, 5.0, _fixed(RuleSpec(
                     high=TierLimits(yellow=1.0), deadband=0.5, on_delay_s=0.0,
                     off_delay_s=0.0, stale=_STALE, quality=QualityRule(tier=Tier.YELLOW)))),
        KindSpec("fault_code", "code", "A detector's fault number (0 none)",
                 0, 65535, 5.0, _fixed(RuleSpec(high=TierLimits(yellow=1.0), deadband=0.5))),
    ]  # fmt: skip
    return {k.kind: k for k in kinds}


CATALOGUE: Mapping[str, KindSpec] = _kinds()


def kind_spec(kind: str) -> KindSpec:
    try:
        return CATALOGUE[kind]
    except KeyError:
        raise KeyError(f"unknown sensor kind {kind!r}") from None
