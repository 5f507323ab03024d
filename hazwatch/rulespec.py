"""The declarative alarm rule spec, as written in the registry file and edited over the API.

A sensor's effective rules are its kind's defaults (`hazwatch.catalog`) with the registry's
per-sensor overrides laid over them field by field. `alerting.rules` compiles the effective
specs of all sensors into numpy arrays; this module only describes and validates them.

Threshold semantics (see docs/alarms.md): a high limit is entered when value >= limit, a low
limit when value <= limit; a tier is left when the value is back past the limit by `deadband`.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from hazwatch.domain import Tier

TIER_NAMES = ("blue", "yellow", "orange", "red")


def parse_tier(value: object) -> object:
    """Accept a tier by colour name ("orange") as well as by number (3); not a boolean (YAML's
    `yes` would otherwise become blue)."""
    if isinstance(value, bool):
        raise ValueError("a tier is a colour name or a number 0-4, not true/false")  # noqa: TRY004
    if isinstance(value, str) and not value.isdigit():
        try:
            return Tier[value.strip().upper()]
        except KeyError:
            names = ", ".join(t.colour for t in Tier)
            raise ValueError(f"unknown tier {value!r}; expected one of {names}") from None
    return value


TierField = Annotated[Tier, BeforeValidator(parse_tier)]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TierLimits(_Spec):
    """Entry limits per tier; None disables that tier. Ordered: a high side must not fall with
    rising tier, a low side must not rise."""

    blue: float | None = None
    yellow: float | None = None
    orange: float | None = None
    red: float | None = None

    def as_tuple(self) -> tuple[float | None, float | None, float | None, float | None]:
        return (self.blue, self.yellow, self.orange, self.red)

    def is_empty(self) -> bool:
        return all(v is None for v in self.as_tuple())

    def check_order(self, *, rising: bool) -> None:
        given = [v for v in self.as_tuple() if v is not None]
        pairs = itertools.pairwise(given)
        if rising and any(b < a for a, b in pairs):
            raise ValueError(f"high limits must not fall from blue to red: {given}")
        if not rising and any(b > a for a, b in pairs):
            raise ValueError(f"low limits must not rise from blue to red: {given}")


class RateRule(_Spec):
    """Rate of change in units per minute over a sliding window."""

    window_s: float = Field(60.0, gt=0)
    rise_per_min: float | None = Field(None, gt=0)
    fall_per_min: float | None = Field(None, gt=0)
    tier: TierField = Tier.YELLOW


class TrendRule(_Spec):
    """Least-squares slope over a window, projected: alarm early (marked predicted) when the
    next tier's limit would be reached within the horizon."""

    window_s: float = Field(600.0, gt=0)
    horizon_s: float = Field(900.0, gt=0)
    min_points: int = Field(5, ge=3)


class StaleRule(_Spec):
    """No reading for `factor` x the sensor's expected period raises `tier`; still nothing after
    `offline_after_s` raises `offline_tier`. Evaluated on a timer, not only when data arrives."""

    factor: float = Field(3.0, gt=1)
    tier: TierField = Tier.BLUE
    offline_after_s: float | None = Field(600.0, gt=0)
    offline_tier: TierField = Tier.YELLOW


class QualityRule(_Spec):
    """A reading with bad quality (detector fault, communication failure) raises `tier`."""

    tier: TierField = Tier.RED


class RuleSpec(_Spec):
    """Every field optional: a registry override sets only what it changes."""

    high: TierLimits | None = None
    low: TierLimits | None = None
    magnitude: bool | None = None  # compare |value| (signed field-mill readings)
    deadband: float | None = Field(None, ge=0)
    on_delay_s: float | None = Field(None, ge=0)
    off_delay_s: float | None = Field(None, ge=0)
    red_immediate: bool | None = None  # red limits skip the on-delay (gas practice)
    hold_s: float | None = Field(None, gt=0)  # event streams: a value counts for hold_s only
    rate: RateRule | None = None
    trend: TrendRule | None = None
    stale: StaleRule | None = None
    quality: QualityRule | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _limits_ordered(self) -> Self:
        if self.high is not None:
            self.high.check_order(rising=True)
        if self.low is not None:
            self.low.check_order(rising=False)
        return self

    def check_effective(self) -> None:
        """Checks of a sensor's effective rules (defaults with overrides laid over them)."""
        if self.hold_s and (self.on_delay_s or self.off_delay_s):
            raise ValueError(
                "hold_s (an event stream: a reading counts for hold_s) cannot be combined "
                "with on_delay_s or off_delay_s; the hold is the dwell"
            )

    def overlay(self, override: RuleSpec | None) -> RuleSpec:
        """This spec with every field the override sets replaced (one level deep: a given
        `high` replaces the whole `high`, so a tier can be switched off with null)."""
        if override is None:
            return self
        merged: dict[str, Any] = self.model_dump(exclude_unset=False)
        merged.update({k: getattr(override, k) for k in override.model_fields_set})
        return RuleSpec.model_validate(
            {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in merged.items()}
        )


class VoteRule(_Spec):
    """k of the listed sensors at or above `at` raise the group one tier above `at`."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    sensors: list[str] = Field(min_length=2)
    k: int = Field(2, ge=2)
    at: TierField = Tier.YELLOW

    @model_validator(mode="after")
    def _k_fits(self) -> Self:
        if self.k > len(self.sensors):
            raise ValueError(f"k={self.k} is more than the {len(self.sensors)} sensors listed")
        if len(set(self.sensors)) != len(self.sensors):
            raise ValueError("a sensor is listed twice")
        if self.at >= Tier.RED:
            raise ValueError("a vote cannot raise above red: `at` must be below red")
        return self
