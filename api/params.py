"""Parameter types shared by the routes, bounded so that nothing the database would choke on
(an id past int4, a NUL byte, a lone surrogate) gets past validation: such input is a 422,
never a 500."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, Field

INT4_MAX = 2**31 - 1
INT8_MAX = 2**63 - 1
KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
SENSOR_KEY_PATTERN = r"^[a-z0-9][a-z0-9_-]*/[a-z0-9][a-z0-9_]*$"
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


def storable(text: str) -> str:
    """Text PostgreSQL can store: UTF-8 encodable and free of NUL characters."""
    if "\x00" in text:
        raise ValueError("text must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return text


SafeText = Annotated[str, AfterValidator(storable)]
Comment = Annotated[SafeText, Field(min_length=1, max_length=1000)]
OptionalComment = Annotated[SafeText | None, Field(max_length=1000)]

SiteKey = Annotated[str, Path(pattern=KEY_PATTERN, max_length=64, description="site key")]
AssetKey = Annotated[str, Path(pattern=KEY_PATTERN, max_length=64, description="asset key")]
SensorId = Annotated[int, Path(ge=1, le=INT4_MAX, description="sensor id")]
AlarmId = Annotated[int, Path(ge=1, le=INT8_MAX, description="alarm id")]
TokenId = Annotated[int, Path(ge=1, le=INT4_MAX, description="token id")]
UserName = Annotated[str, Path(pattern=USER_NAME_PATTERN, description="user name")]

SiteFilter = Annotated[
    str | None, Query(pattern=KEY_PATTERN, max_length=64, description="site key")
]
AssetFilter = Annotated[
    str | None, Query(pattern=KEY_PATTERN, max_length=64, description="asset key")
]
SensorFilter = Annotated[
    str | None,
    Query(pattern=SENSOR_KEY_PATTERN, max_length=130, description="sensor key device/channel"),
]
KindFilter = Annotated[
    str | None, Query(pattern=r"^[a-z0-9_]+$", max_length=64, description="sensor kind")
]

EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def time_problem(name: str, value: datetime | None) -> str | None:
    """Why a time query parameter is unusable, or None: it needs a zone and a sane year."""
    if value is None:
        return None
    if value.tzinfo is None:
        return f"{name} needs a time zone (e.g. 2026-11-28T08:00:00Z)"
    if not EARLIEST <= value <= LATEST:
        return f"{name} must lie between {EARLIEST.year} and {LATEST.year}"
    return None
