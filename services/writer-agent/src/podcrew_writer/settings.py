"""The writer agent's settings: its own (`PODCREW_WRITER_*`) and the shared parts it reads,
together in `WriterConfig`, which the entry point builds and hands to `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.auth import ServiceTokenSettings
from podcrew_core.runtime.settings import AgentSettings, Port, RedisSettings


class WriterSettings(AgentSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_WRITER_", extra="ignore")

    port: Port = 8102
    """TCP port to listen on."""
    max_tokens: int = Field(default=4096, ge=256, le=64000)
    """Report length cap."""
    default_deadline_s: float = Field(default=120.0, gt=0)
    """Deadline when the caller sends none."""
    delta_flush_s: float = Field(default=0.05, ge=0, le=5.0)
    """The report streams to the worker as at most one `delta` event per this many seconds, each
    carrying the model's deltas since the last (0: one event per model delta)."""


@dataclass(frozen=True, kw_only=True)
class WriterConfig:
    """Everything the writer agent reads from its environment, read once by whoever starts it
    (`__main__`, a test) and handed to `create_app`. A part not given is read from the
    environment when this is built."""

    service: WriterSettings = field(default_factory=WriterSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: ServiceTokenSettings = field(default_factory=ServiceTokenSettings)
