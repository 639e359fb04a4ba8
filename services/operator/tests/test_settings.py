"""Settings: prefixed, validated, secrets kept secret, built only when asked for."""

from __future__ import annotations

import importlib
import sys

import pytest
from pydantic import ValidationError

from podcrew_operator.__main__ import main
from podcrew_operator.settings import OperatorSettings


def test_env_prefix_and_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_OPERATOR_API_URL", "http://api:8000")
    monkeypatch.setenv("PODCREW_OPERATOR_API_KEY", "s3cret-key")
    monkeypatch.setenv("PODCREW_OPERATOR_NAMESPACES", '["a", "b"]')
    monkeypatch.setenv("PODCREW_OPERATOR_MAX_CONCURRENT_RUNS", "3")
    settings = OperatorSettings()
    assert settings.api_url == "http://api:8000"
    assert settings.namespaces == ["a", "b"] and settings.max_concurrent_runs == 3
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret-key"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    "env",
    [
        {"PODCREW_OPERATOR_API_KEY": "  "},
        {"PODCREW_OPERATOR_API_URL": "api:8000"},
        {"PODCREW_OPERATOR_MAX_CONCURRENT_RUNS": "0"},
        {"PODCREW_OPERATOR_POLL_INTERVAL_S": "5", "PODCREW_OPERATOR_POLL_MAX_INTERVAL_S": "1"},
    ],
)
def test_bad_settings_are_refused(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        OperatorSettings()


def test_importing_the_handlers_reads_no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_OPERATOR_MAX_CONCURRENT_RUNS", "not a number")
    for name in [m for m in sys.modules if m.startswith("podcrew_operator.handlers")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.import_module("podcrew_operator.handlers")  # would raise if settings were built


def test_the_entry_point_wants_a_scope_and_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PODCREW_OPERATOR_NAMESPACES", raising=False)
    monkeypatch.delenv("PODCREW_OPERATOR_CLUSTER_WIDE", raising=False)
    with pytest.raises(SystemExit, match="--namespace"):
        main([])
    monkeypatch.setenv("PODCREW_OPERATOR_MAX_CONCURRENT_RUNS", "0")
    with pytest.raises(SystemExit, match="invalid settings"):
        main(["--namespace", "x"])
    with pytest.raises(SystemExit):
        main(["--namespace", "x", "--all-namespaces"])  # one or the other
