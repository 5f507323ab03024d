"""Parameter types shared by the routes, bounded so that nothing the database would choke on
(an id past int4, a NUL byte, a lone surrogate) gets past validation: such input is a 422,
never a 500."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

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


# No NUL in the schema too, so that generated "valid" text is text PostgreSQL can store.
NO_NUL_PATTERN = r"^[^\x00]*$"
SafeText = Annotated[str, Field(pattern=NO_NUL_PATTERN), AfterValidator(storable)]
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


def rfc3339_only(value: object) -> object:
    """Refuse what pydantic would otherwise read as a Unix time ("0.5", "1700000000")."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}", value):
        raise ValueError("expected an RFC 3339 time such as 2026-11-28T08:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(rfc3339_only)]


def whole_number(value: object) -> object:
    """JSON Schema's integer: 600 or 600.0, but not "600", 600.5 or true."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected a whole number")  # noqa: TRY004 - pydantic wants ValueError
    return value


WholeNumber = Annotated[int, BeforeValidator(whole_number)]


def clamp_time(value: datetime) -> datetime:
    """A zoned time moved into [EARLIEST, LATEST], the window every query works in (so year 1
    or 9999 cannot overflow a conversion, and is not refused either)."""
    return min(max(value, EARLIEST), LATEST)
