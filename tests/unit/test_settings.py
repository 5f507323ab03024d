"""Settings come from the environment with the HAZWATCH_ prefix, and every one is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from hazwatch.config import Settings

DOC = Path(__file__).parents[2] / "docs" / "configuration.md"


def test_defaults_need_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    settings = Settings()
    assert settings.mqtt.topic_root == "hazwatch/v1"
    assert settings.ingest.max_payload_bytes == 256 * 1024


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZWATCH_DATABASE__URL", "postgresql://u@db:5433/x")
    monkeypatch.setenv("HAZWATCH_MQTT__PORT", "8883")
    monkeypatch.setenv("HAZWATCH_MQTT__SITES", '["north", "south"]')
    settings = Settings()
    assert settings.database.url == "postgresql://u@db:5433/x"
    assert settings.mqtt.port == 8883
    assert settings.mqtt.sites == ("north", "south")


def test_invalid_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HAZWATCH_MQTT__PORT", "70000")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_every_setting_is_documented_and_nothing_else() -> None:
    text = DOC.read_text()
    names = _env_names(Settings, "HAZWATCH_")
    missing = [n for n in names if f"`{n}`" not in text]
    assert not missing, f"undocumented settings in docs/configuration.md: {missing}"
    table_rows = re.findall(r"^\| `(HAZWATCH_[A-Z_]+)`", text, flags=re.MULTILINE)
    stale = sorted(set(table_rows) - set(names))
    assert not stale, f"docs/configuration.md documents settings that do not exist: {stale}"
