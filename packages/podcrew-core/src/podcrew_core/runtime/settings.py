"""The settings every service shares; each service subclasses with its own env prefix, so
a shared setting is declared once here and read as `PODCREW_<SERVICE>_<NAME>`.

Every settings class derives from `PodcrewSettings`, so every secret setting (a `SecretStr`, or
one marked `SecretSetting()`) may also come from a file: `<NAME>_FILE` names the file, as
official images do (`POSTGRES_PASSWORD_FILE`), which is how a Kubernetes Secret mounted as a
volume reaches a process without being in its environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port: each service declares its own default and says what listens on it."""

FILE_SUFFIX = "_FILE"


class SecretSetting:
    """Marks a setting that holds a secret without being a `SecretStr` (a JSON list of key
    hashes, say), so it may come from a file too: `Annotated[list[ApiKey], SecretSetting()]`."""


def is_secret(field: FieldInfo) -> bool:
    """Whether a setting may be read from the file `<NAME>_FILE` names."""
    annotation = field.annotation
    return (
        annotation is SecretStr
        or SecretStr in get_args(annotation)
        or any(isinstance(m, SecretSetting) for m in field.metadata)
    )


def read_secret_file(variable: str, path: str) -> str:
    """The content of a secret file, less its trailing newline (`echo` and most editors add
    one; no secret ends with one). The error names the variable and the file, never content."""
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"{variable}: cannot read the file {path!r}: {reason}") from exc


class SecretFileSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading each secret setting from the file named
    by `<NAME>_FILE` instead: the same names, prefixes, aliases and JSON decoding as the
    variable itself. Setting both is refused, since which one wins would be a guess."""

    def __call__(self) -> dict[str, Any]:
        # Files are read before the base class looks fields up, since it rewraps whatever
        # a lookup raises in a message that no longer names the variable or the file.
        self._contents = self._read_files()
        return super().__call__()

    def _read_files(self) -> dict[str, str]:
        suffix = FILE_SUFFIX if self.case_sensitive else FILE_SUFFIX.lower()
        contents: dict[str, str] = {}
        for field_name, field in self.settings_cls.model_fields.items():
            if not is_secret(field):
                continue
            # `_extract_field_info` gives the names the environment source itself reads
            # (prefix, alias, case), so `<NAME>_FILE` follows `<NAME>` whatever declares it.
            for _, env_name, _ in self._extract_field_info(field, field_name):
                path = self.env_vars.get(env_name + suffix)
                if path is None:
                    continue
                variable = (env_name + FILE_SUFFIX).upper()
                if self.env_vars.get(env_name) is not None:
                    raise SettingsError(f"{env_name.upper()} and {variable} are both set: keep one")
                contents[env_name] = read_secret_file(variable, path)
        return contents

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if is_secret(field):
            for key, env_name, is_complex in self._extract_field_info(field, field_name):
                if env_name in self._contents:
                    return self._contents[env_name], key, is_complex
        return None, field_name, False

    def prepare_field_value(
        self, field_name: str, field: FieldInfo, value: Any, value_is_complex: bool
    ) -> Any:
        prepared = super().prepare_field_value(field_name, field, value, value_is_complex)
        # Handed over as a SecretStr, so even a validation error shows it masked.
        return SecretStr(prepared) if isinstance(prepared, str) else prepared


class PodcrewSettings(BaseSettings):
    """Base of every podcrew settings class: the environment, then `<NAME>_FILE` for secret
    settings (`SecretFileSource`)."""

    model_config = SettingsConfigDict(extra="ignore", use_attribute_docstrings=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            SecretFileSource(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )


class LoggingSettings(PodcrewSettings):
    """How a process logs: every podcrew process, an HTTP service or not (the operator)."""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level written to the JSON log on stderr."""


class ServiceSettings(LoggingSettings):
    """Where an HTTP service listens, what it admits and how it stops. Built by the entry
    point, never at import."""

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: Port = 8000
    """TCP port to listen on."""
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    """Largest accepted body."""
    max_concurrency: int = Field(default=256, ge=1)
    """Requests served at once; the rest wait for a slot."""
    max_queue: int = Field(default=512, ge=0)
    """Requests that may wait for a slot; beyond this, 503 with Retry-After."""
    max_queue_wait_s: float = Field(default=10.0, ge=0)
    """Longest wait for a slot before 503 (or the deadline)."""
    drain_delay_s: float = Field(default=0.0, ge=0)
    """After SIGTERM, seconds to keep serving while /readyz fails (0 when a preStop hook already
    waits, as in the chart)."""
    graceful_shutdown_s: float = Field(default=20.0, ge=0)
    """How long in-flight requests may finish after SIGTERM."""
    keep_alive_s: int = Field(default=75, ge=1)
    """How long an idle keep-alive connection stays open. Longer than the idle timeout of the
    clients in front (podcrew's own 5 s, proxies' usual 60 s), so a client never sends a
    request on a connection the server is closing."""


class AgentSettings(ServiceSettings):
    """What both agents (research and writer) read alike."""

    key_prefix: str = "podcrew"
    """Prefix of the Redis keys of the spend ledger; the orchestrator's key_prefix (the chart
    sets both from one value), so every hop counts a run alike."""


class RedisSettings(PodcrewSettings):
    """`PODCREW_REDIS_URL`: shared by every process that keeps state in Redis."""

    model_config = SettingsConfigDict(
        env_prefix="PODCREW_REDIS_", extra="ignore", use_attribute_docstrings=True
    )

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL; may carry a password, so it is never logged. Its query string may size each
    process' connection pool: `?max_connections=256&timeout=30` (the defaults) allows 256
    connections and lets a command wait 30 s for a free one."""
    password: SecretStr | None = None
    """Redis password, when the URL carries none: so the password can come from a mounted
    Secret while the URL stays plain configuration."""
    mode: Literal["standalone", "sentinel", "cluster"] = "standalone"
    """How Redis is reached: `standalone`, one endpoint (`url`; a managed Redis whose endpoint
    follows its failover too); `sentinel`, the primary the sentinels name (`sentinels`,
    `sentinel_service`; the URL gives only the database and user); `cluster`, a Redis
    Cluster, `url` naming any of its nodes (docs/deploy.md, "Redis topologies")."""
    sentinels: str = ""
    """Sentinel mode: the sentinels, comma-separated `host:port` (`s1:26379,s2:26379`)."""
    sentinel_service: str = Field(default="mymaster", min_length=1)
    """Sentinel mode: the name the sentinels monitor the primary under."""
    sentinel_password: SecretStr | None = None
    """Sentinel mode: the sentinels' own password, when they require one."""
    min_replicas: int = Field(default=0, ge=0, le=16)
    """Replicas that must hold a run before it is accepted (202) and before a worker
    acknowledges its end (`WAIT`); 0 does not wait. With replicas and a failover (Sentinel,
    a managed Redis, Redis Cluster), only this makes an accepted run survive its primary."""
    wait_timeout_ms: int = Field(default=1000, ge=1, le=60_000)
    """How long a write waits for `min_replicas`; then the submission answers 503
    `not-replicated` (the run may still execute) and a worker leaves its run unacknowledged."""

    @model_validator(mode="after")
    def _one_password(self) -> RedisSettings:
        if self.password is not None and urlsplit(self.url.get_secret_value()).password:
            raise ValueError("the Redis URL carries a password and PODCREW_REDIS_PASSWORD is set")
        if self.mode == "sentinel" and not self.sentinel_addresses:
            raise ValueError("PODCREW_REDIS_MODE is sentinel: set PODCREW_REDIS_SENTINELS")
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs."""
        addresses = []
        for item in filter(None, (part.strip() for part in self.sentinels.split(","))):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"PODCREW_REDIS_SENTINELS: {item!r} is not host:port")
            addresses.append((host.strip("[]"), int(port)))
        return addresses
