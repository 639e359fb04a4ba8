"""Writer agent settings (`PODCREW_WRITER_*`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from podcrew_core.runtime.settings import ServiceSettings


class WriterSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_WRITER_", extra="ignore")

    port: int = Field(default=8102, ge=1, le=65535, description="TCP port to listen on.")
    max_tokens: int = Field(default=4096, ge=256, le=64000, description="Report length cap.")
    key_prefix: str = Field(
        default="podcrew",
        description="Prefix of the Redis keys of the spend ledger; the orchestrator's "
        "key_prefix (the chart sets both from one value), so every hop counts a run alike.",
    )
    default_deadline_s: float = Field(
        default=120.0, gt=0, description="Deadline when the caller sends none."
    )
    delta_flush_s: float = Field(
        default=0.05,
        ge=0,
        le=5.0,
        description="The report streams to the worker as at most one `delta` event per this "
        "many seconds, each carrying the model's deltas since the last (0: one event per "
        "model delta).",
    )
