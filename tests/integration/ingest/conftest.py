"""Fixtures of the ingest integration tests (helpers are in ingest_support.py)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from ingest_support import Env

from bench.broker import Mosquitto


@pytest.fixture
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as b:
        yield b


@pytest.fixture
def env(db_url: str, broker: Mosquitto) -> Env:
    tag = uuid.uuid4().hex[:8]
    return Env(db_url, broker, f"hwtest/{tag}/v1", f"hw-ingest-{tag}")
