"""Secrets stay out of messages, logs and saved configurations."""

from __future__ import annotations

import json

import pytest

import reflectkit as rk
from reflectkit.redaction import REDACTED, is_secret_name, redact, redact_mapping


def test_known_and_key_shaped_secrets_are_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_PASSWORD", "hunter2-but-longer")
    text = (
        "env hunter2-but-longer, given s3cr3t-value, openai sk-proj-abcdefgh1234, "
        "header Bearer abc.def.ghijkl, url ?api_key=zzzzzzzz&x=1, short sk-1"
    )
    clean = redact(text, secrets=["s3cr3t-value"])
    for secret in (
        "hunter2-but-longer",
        "s3cr3t-value",
        "sk-proj-abcdefgh1234",
        "abc.def.ghijkl",
        "zzzzzzzz",
    ):
        assert secret not in clean
    assert "api_key=" + REDACTED in clean
    assert "short sk-1" in clean  # too short to be a key


def test_mappings_lose_secret_named_values_at_any_depth() -> None:
    clean = redact_mapping(
        {
            "api_key": "x",
            "temperature": 0,
            "headers": {"Authorization": "Bearer abcdefghij"},
            "api_base": "http://127.0.0.1:8000",
            "note": "token=abcdefgh1",
        }
    )
    assert clean == {
        "api_key": REDACTED,
        "temperature": 0,
        "headers": {"Authorization": REDACTED},
        "api_base": "http://127.0.0.1:8000",
        "note": f"token={REDACTED}",
    }
    assert is_secret_name("OPENAI_API_KEY")
    assert not is_secret_name("temperature")


def test_a_configuration_is_safe_to_log() -> None:
    config = rk.ReflectConfig(
        model="gpt-4o-mini",
        model_kwargs={"api_key": "sk-live-0123456789", "temperature": 0},
        critic_kwargs={"api_key": "sk-critic-0123456789"},
    )
    dumped = json.dumps(config.public_dict())
    assert "0123456789" not in dumped
    assert config.public_dict()["model_kwargs"]["temperature"] == 0
    assert config.public_dict()["critic"] is None
