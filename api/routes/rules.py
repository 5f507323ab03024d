"""A sensor's alarm rules: read by anyone who may read, replaced by engineers, audited.

A PUT replaces the sensor's overrides (the registry's `rules:` block) with the body. The body
is a `RuleSpec`; before it is stored, it is laid over the kind's defaults and that must validate
too (limits still ordered, required plant parameters present). Non-finite numbers are refused.
The change is written to `audit_log` with the overrides before and after, and announced on
channel `hazwatch_rules` so the engine can recompile the sensor's rules.

A later `hazwatch registry load` writes the file's overrides again: an engineer who changes a
rule here should change the registry file too (docs/api.md).
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError

from api.deps import Conn, Reader, RuleEditor
from api.errors import Conflict, Invalid, NotFound
from api.params import SensorId
from api.routes import API_PREFIX
from api.schemas import NOT_FOUND, SECURED, SensorRules
from hazwatch.catalog import CATALOGUE
from hazwatch.registry.store import RULES_CHANNEL
from hazwatch.rulespec import RuleSpec

router = APIRouter(prefix=API_PREFIX, tags=["rules"], responses=SECURED)


_SENSOR = """
SELECT n.sensor_id, n.key, n.kind, n.params::text AS params, n.rules::text AS rules
FROM sensors n JOIN assets a ON a.asset_id = n.asset_id JOIN sites s ON s.site_id = a.site_id
WHERE n.sensor_id = $1 AND ($2::text[] IS NULL OR s.key = ANY($2::text[]))
"""


def effective_rules(kind: str, params: dict[str, float], overrides: RuleSpec) -> RuleSpec:
    """The kind's defaults with the overrides laid over them; ValueError when that fails."""
    spec = CATALOGUE.get(kind)
    if spec is None:
        raise ValueError(f"sensor kind {kind!r} is not in the catalogue")
    effective = spec.default_rules(params).overlay(overrides)
    effective.check_effective()  # what the registry and the alarm engine's compiler refuse
    return effective


def _where(exc: ValidationError) -> str:
    return ".".join(str(p) for p in exc.errors()[0]["loc"]) or "body"


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return all(_all_finite(v) for v in value)
    return True


def _view(
    sensor_id: int, key: str, kind: str, overrides: dict[str, Any], eff: RuleSpec
) -> SensorRules:
    return SensorRules(
        sensor_id=sensor_id,
        key=key,
        kind=kind,
        overrides=overrides,
        effective=eff.model_dump(mode="json"),
    )


@router.get(
    "/sensors/{sensor_id}/rules",
    responses=NOT_FOUND,
    response_model=SensorRules,
    summary="Alarm rules",
)
async def get_rules(sensor_id: SensorId, user: Reader, conn: Conn) -> SensorRules:
    row = await conn.fetchrow(_SENSOR, sensor_id, user.scope_param)
    if row is None:
        raise NotFound(f"no sensor {sensor_id}")
    overrides = orjson.loads(row["rules"])
    try:
        eff = effective_rules(
            row["kind"], orjson.loads(row["params"]), RuleSpec.model_validate(overrides)
        )
    except ValueError as exc:
        raise Conflict(f"the stored rules of sensor {row['key']} do not compile: {exc}") from exc
    return _view(row["sensor_id"], row["key"], row["kind"], overrides, eff)


@router.put(
    "/sensors/{sensor_id}/rules",
    responses=NOT_FOUND,
    response_model=SensorRules,
    summary="Replace a sensor's rule overrides (engineers; audited)",
)
async def put_rules(
    sensor_id: SensorId, body: RuleSpec, user: RuleEditor, conn: Conn, request: Request
) -> SensorRules:
    # FastAPI validated the body leniently (a 0 would pass for false); the API takes JSON types
    # as the schema states them, so validate the raw JSON again, strictly.
    try:
        body = RuleSpec.model_validate_json(await request.body(), strict=True)
    except ValidationError as exc:
        raise Invalid(f"rules: {exc.errors()[0]['msg']} at {_where(exc)}") from exc
    overrides = body.model_dump(mode="json", exclude_unset=True)
    if not _all_finite(body.model_dump()):
        raise Invalid("rule limits must be finite numbers")
    async with conn.transaction():
        row = await conn.fetchrow(_SENSOR + " FOR UPDATE OF n", sensor_id, user.scope_param)
        if row is None:
            raise NotFound(f"no sensor {sensor_id}")
        try:
            eff = effective_rules(row["kind"], orjson.loads(row["params"]), body)
        except (ValueError, ValidationError) as exc:
            raise Invalid(f"these rules do not fit a {row['kind']} sensor: {exc}") from exc
        after = json.dumps(overrides, allow_nan=False)
        await conn.execute(
            "UPDATE sensors SET rules = $2::jsonb, updated_at = now() WHERE sensor_id = $1",
            sensor_id,
            after,
        )
        await conn.execute(
            """INSERT INTO audit_log (actor, action, target, before, after)
               VALUES ($1, 'rules.update', $2, $3::jsonb, $4::jsonb)""",
            user.name,
            f"sensor:{row['key']}",
            row["rules"],
            after,
        )
        await conn.execute(
            "SELECT pg_notify($1, $2)",
            RULES_CHANNEL,
            orjson.dumps({"sensor_id": sensor_id, "sensor": row["key"]}).decode(),
        )
    return _view(row["sensor_id"], row["key"], row["kind"], overrides, eff)
