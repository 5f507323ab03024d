"""Request and response bodies of the API, as they appear in the OpenAPI schema.

Floats in responses are finite or null: a stored NaN is rendered null next to its quality code.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from api.auth import Role
from api.params import (
    KEY_PATTERN,
    USER_NAME_PATTERN,
    Comment,
    OptionalComment,
    SafeText,
    WholeNumber,
)

AlarmState = Literal["active_unacked", "active_acked", "cleared_unacked", "closed"]
TierNumber = int


def finite(value: float | None) -> float | None:
    """A float JSON can carry: NaN and infinities become None (rendered null)."""
    return value if value is not None and math.isfinite(value) else None


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Errors ---------------------------------------------------------------------------------------


class ErrorDetail(_Out):
    code: str = Field(description="a short, stable code: unauthorized, not_found, conflict...")
    message: str
    id: str | None = Field(None, description="for 500s: the id to find in the server log")
    details: list[dict[str, Any]] | None = Field(None, description="validation problems")


class ErrorBody(_Out):
    error: ErrorDetail


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


SECURED: dict[int | str, dict[str, Any]] = {
    400: _error("the body is not parseable JSON"),
    401: _error("no token, or an unknown, expired or revoked token"),
    403: _error("the user's role may not do this"),
    422: _error("the request is not valid"),
    429: _error("too many failed authentication attempts (see Retry-After)"),
    503: _error("the database is unavailable (see Retry-After)"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: _error("no such object, or one outside the user's site scope")
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: _error("the action does not fit the object's state")
}


# Registry -------------------------------------------------------------------------------------


class Site(_Out):
    site_id: int
    key: str
    name: str
    timezone: str
    latitude: float | None
    longitude: float | None


class Asset(_Out):
    asset_id: int
    key: str
    site: str
    kind: str
    name: str
    static_risk: TierNumber
    r_value: float | None


class Sensor(_Out):
    sensor_id: int
    key: str
    site: str
    asset: str
    device: str | None
    channel: str
    kind: str
    unit: str
    name: str
    range_min: float
    range_max: float
    period_s: float | None


class SensorRules(_Out):
    sensor_id: int
    key: str
    kind: str
    overrides: dict[str, Any] = Field(description="the sensor's own overrides")
    effective: dict[str, Any] = Field(
        description="the kind's defaults with the overrides laid over"
    )


class Latest(_Out):
    sensor_id: int
    sensor: str
    site: str
    ts: datetime
    value: float | None
    quality: int


# Readings -------------------------------------------------------------------------------------


class Point(_Out):
    ts: datetime = Field(description="reading time, or the start of the bucket")
    value: float | None = Field(description="the reading, or the mean of the bucket's values")
    min: float | None
    max: float | None
    count: int = Field(description="readings with a value")
    bad: int = Field(description="readings with bad quality")
    quality: int | None = Field(description="quality code of a raw reading; null for a bucket")


class Readings(_Out):
    sensor_id: int
    sensor: str
    unit: str
    start: datetime
    end: datetime
    source: Literal["raw", "raw_buckets", "rollup"]
    bucket_s: int | None
    max_points: int
    points: list[Point]


# Alarms ---------------------------------------------------------------------------------------


class Alarm(_Out):
    alarm_id: int
    site: str
    asset: str
    sensor: str | None = Field(description="null for an asset's vote alarm")
    sensor_id: int | None
    rule: str
    state: AlarmState
    tier: TierNumber
    max_tier: TierNumber
    predicted: bool
    value: float | None
    message: str
    raised_at: datetime
    cleared_at: datetime | None
    acked_at: datetime | None
    acked_by: str | None
    closed_at: datetime | None
    shelved_until: datetime | None
    shelve_reason: str | None
    out_of_service: StrictBool
    suppressed: bool = Field(description="shelved or out of service: nobody is notified")
    assignee: str | None
    updated_at: datetime


class AlarmPage(_Out):
    items: list[Alarm]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class AlarmEvent(_Out):
    event_id: int
    ts: datetime
    recorded_at: datetime
    kind: str
    tier: TierNumber
    value: float | None
    actor: str | None
    comment: str | None
    details: dict[str, Any]


class AlarmDetail(Alarm):
    events: list[AlarmEvent]


class ActionDone(_Out):
    alarm_id: int
    event_id: int
    kind: str
    state: AlarmState


class AckBody(_In):
    comment: OptionalComment = None


class ShelveBody(_In):
    duration_s: WholeNumber = Field(ge=60, le=7 * 86_400, description="1 minute to 7 days")
    reason: Comment


class UnshelveBody(_In):
    comment: OptionalComment = None


class CommentBody(_In):
    comment: Comment


class AssignBody(_In):
    assignee: str | None = Field(
        pattern=USER_NAME_PATTERN, description="a user name, or null to take the alarm back"
    )


class OutOfServiceBody(_In):
    out_of_service: bool
    reason: Comment


# Risk -----------------------------------------------------------------------------------------


class RiskLevel(_Out):
    tier: TierNumber
    colour: str


class AssetRisk(_Out):
    asset: str
    name: str
    kind: str
    r_value: float | None
    static: RiskLevel = Field(description="from the assessment (GB 18218 R value or configured)")
    dynamic: RiskLevel = Field(description="highest tier of its active, not suppressed alarms")
    level: RiskLevel = Field(description="what the map shows: max(static, dynamic) by default")
    active_alarms: int
    suppressed_alarms: int


class SiteRisk(_Out):
    site: str
    name: str
    static: RiskLevel
    dynamic: RiskLevel
    level: RiskLevel
    assets: list[AssetRisk]


class RiskPicture(_Out):
    combine: Literal["max", "dynamic"]
    sites: list[SiteRisk]


# Users and tokens -----------------------------------------------------------------------------


class Me(_Out):
    name: str
    role: Role
    sites: list[str] | None
    permissions: list[str]


class User(_Out):
    user_id: int
    name: str
    role: Role
    sites: list[str] | None
    disabled: bool
    created_at: datetime


class UserBody(_In):
    name: str = Field(pattern=USER_NAME_PATTERN)
    role: Role
    sites: list[Annotated[str, Field(pattern=KEY_PATTERN, max_length=64)]] | None = Field(
        None, description="site keys; null for every site"
    )


class TokenBody(_In):
    name: Annotated[SafeText, Field(max_length=100)] = ""
    expires_days: float | None = Field(None, gt=0, le=3650)


class Token(_Out):
    token_id: int
    user: str
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewToken(Token):
    secret: str = Field(description="shown once; only its SHA-256 is stored")


# Health ---------------------------------------------------------------------------------------


class Health(_Out):
    status: Literal["ok"]


class Ready(_Out):
    status: Literal["ready"]
    database: Literal["up"]
    stream: Literal["listening", "reconnecting"]
