"""Secret settings from files: `<NAME>_FILE` names a file (a mounted Secret) holding the value."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import SettingsConfigDict, SettingsError

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.auth import ServiceTokenSettings
from podcrew_core.runtime.redis import create_redis
from podcrew_core.runtime.settings import PodcrewSettings, RedisSettings, SecretSetting

TOKEN = "t0ken-from-a-mounted-secret"


class _Settings(PodcrewSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_TEST_")

    token: SecretStr | None = None
    keys: Annotated[list[str], SecretSetting()] = Field(default_factory=list)
    plain: str = "default"

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the token must be at least 16 characters")
        return value


def _secret_file(tmp_path: Path, text: str, name: str = "secret") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_a_secret_setting_is_read_from_its_file_without_the_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN_FILE", _secret_file(tmp_path, TOKEN + "\n"))
    token = ServiceTokenSettings().service_token
    assert token is not None and token.get_secret_value() == TOKEN


def test_the_variable_itself_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN", TOKEN)
    token = ServiceTokenSettings().service_token
    assert token is not None and token.get_secret_value() == TOKEN


def test_a_marked_setting_is_decoded_as_json_from_its_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODCREW_TEST_KEYS_FILE", _secret_file(tmp_path, '["a", "b"]\n'))
    assert _Settings().keys == ["a", "b"]


def test_only_secret_settings_have_a_file_variant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODCREW_TEST_PLAIN_FILE", _secret_file(tmp_path, "from-a-file"))
    assert _Settings().plain == "default"


def test_the_provider_key_follows_the_sdk_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY_FILE", _secret_file(tmp_path, "sk-ant-test\n"))
    key = LLMSettings().anthropic_api_key
    assert key is not None and key.get_secret_value() == "sk-ant-test"


def test_both_set_is_a_startup_error_naming_both(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN", TOKEN)
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN_FILE", _secret_file(tmp_path, TOKEN))
    with pytest.raises(SettingsError) as info:
        ServiceTokenSettings()
    message = str(info.value)
    assert "PODCREW_SERVICE_TOKEN and PODCREW_SERVICE_TOKEN_FILE are both set" in message
    assert TOKEN not in message


def test_an_unreadable_file_is_a_startup_error_naming_the_variable_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "no-such-file"
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN_FILE", str(missing))
    with pytest.raises(SettingsError, match="PODCREW_SERVICE_TOKEN_FILE") as info:
        ServiceTokenSettings()
    assert str(missing) in str(info.value)
    # A directory (a Secret mounted without `items`/`subPath`) is refused alike.
    monkeypatch.setenv("PODCREW_SERVICE_TOKEN_FILE", str(tmp_path))
    with pytest.raises(SettingsError, match="PODCREW_SERVICE_TOKEN_FILE"):
        ServiceTokenSettings()


def test_a_value_from_a_file_never_shows_even_when_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = "too-short-x"
    monkeypatch.setenv("PODCREW_TEST_TOKEN_FILE", _secret_file(tmp_path, short))
    with pytest.raises(ValidationError, match="at least 16 characters") as info:
        _Settings()
    assert short not in str(info.value)
    monkeypatch.setenv("PODCREW_TEST_TOKEN_FILE", _secret_file(tmp_path, TOKEN))
    settings = _Settings()
    assert TOKEN not in repr(settings) and TOKEN not in str(settings.model_dump())


async def test_the_redis_password_reaches_the_connection_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PODCREW_REDIS_URL", "redis://redis.example:6379/0")
    monkeypatch.setenv("PODCREW_REDIS_PASSWORD_FILE", _secret_file(tmp_path, "pa55word\n"))
    redis = create_redis(RedisSettings())
    try:
        assert redis.connection_pool.connection_kwargs["password"] == "pa55word"
    finally:
        await redis.aclose()


def test_a_redis_password_in_both_places_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PODCREW_REDIS_URL", "redis://:inline@redis.example:6379/0")
    monkeypatch.setenv("PODCREW_REDIS_PASSWORD", "separate")
    with pytest.raises(ValidationError, match="carries a password"):
        RedisSettings()
