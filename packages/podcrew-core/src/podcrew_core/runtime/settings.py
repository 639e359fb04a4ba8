"""The settings every service shares; each service subclasses with its own env prefix, so
a shared setting is declared once here and read as `PODCREW_<SERVICE>_<NAME>`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

Port = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port: each service declares its own default and says what listens on it."""


class LoggingSettings(BaseSettings):
    """How a process logs: every podcrew process, an HTTP service or not (the operator)."""

    model_config = SettingsConfigDict(extra="ignore", use_attribute_docstrings=True)

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


class RedisSettings(BaseSettings):
    """`PODCREW_REDIS_URL`: shared by every process that keeps state in Redis."""

    model_config = SettingsConfigDict(
        env_prefix="PODCREW_REDIS_", extra="ignore", use_attribute_docstrings=True
    )

    url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Redis URL; may carry a password, so it is never logged. Its query string may size each
    process' connection pool: `?max_connections=256&timeout=30` (the defaults) allows 256
    connections and lets a command wait 30 s for a free one."""
