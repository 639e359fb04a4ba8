"""Settings of the simulated Messages API (`PODCREW_SIM_*`).

The latencies, fault rates and rate limits live in `FaultProfile` so that `PUT /_sim/faults`
can change them at runtime with the same validation the environment gets at startup.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import SettingsConfigDict

from podcrew_core.runtime.settings import Port, ServiceSettings

Fault = Literal["429", "529", "500", "slow", "drop"]
FAULTS: tuple[Fault, ...] = ("429", "529", "500", "slow", "drop")
"""Every fault the simulator injects, in the order their rates are laid out on [0, 1)."""

# The Messages API's own request size limit, so the simulator refuses what Anthropic would.
MESSAGES_API_MAX_BODY_BYTES = 32 * 1024 * 1024


class FaultProfile(BaseModel):
    """How slow and how unreliable the simulated API is; changeable while it runs."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    latency_s: float = Field(default=0.0, ge=0.0, le=600.0)
    """Total time of a non-streaming call."""
    ttft_s: float = Field(default=0.0, ge=0.0, le=600.0)
    """Time to first token of a stream."""
    stream_chunk_delay_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Pause between two deltas of a stream."""
    rate_429: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls refused with 429 rate_limit_error."""
    rate_529: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls refused with 529 overloaded_error."""
    rate_500: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls failing with 500 api_error."""
    rate_slow: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls that stall `slow_s` first."""
    rate_drop: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of calls whose connection is cut: mid-stream, or before a non-streaming body."""
    retry_after_s: float = Field(default=1.0, ge=0.0, le=3600.0)
    """`retry-after` sent with 429 and 529."""
    slow_s: float = Field(default=30.0, ge=0.0, le=3600.0)
    """How long a slow call stalls before answering."""
    seed: int | None = None
    """Seed of the fault dice, for a reproducible fault sequence."""
    batch_latency_s: float = Field(default=0.0, ge=0.0, le=86_400.0)
    """How long a Message Batch stays in progress before its results are ready."""
    requests_per_minute: int = Field(default=0, ge=0)
    """The account's requests per minute per model, past which calls get 429 (0: no limit)."""
    input_tokens_per_minute: int = Field(default=0, ge=0)
    """Its input tokens per minute per model, cache reads not counted (0: no limit)."""
    output_tokens_per_minute: int = Field(default=0, ge=0)
    """Its output tokens per minute per model (0: no limit)."""

    @model_validator(mode="after")
    def _one_fault_per_call(self) -> Self:
        # One uniform draw per call picks at most one fault, so the rates are exact shares of
        # the traffic only if they fit in [0, 1] together.
        total = sum(self.rates().values())
        if total > 1.0 + 1e-9:
            raise ValueError(f"the fault rates add up to {total:g}; they may add up to 1 at most")
        return self

    def rate_limits(self) -> tuple[int, int, int]:
        """Requests, input tokens and output tokens per minute (0: no limit)."""
        return (
            self.requests_per_minute,
            self.input_tokens_per_minute,
            self.output_tokens_per_minute,
        )

    def rates(self) -> dict[Fault, float]:
        """Each fault's share of calls, in draw order."""
        return {
            "429": self.rate_429,
            "529": self.rate_529,
            "500": self.rate_500,
            "slow": self.rate_slow,
            "drop": self.rate_drop,
        }


class SimulatorSettings(ServiceSettings, FaultProfile):
    """The simulated Anthropic Messages API: where it listens, how it misbehaves."""

    model_config = SettingsConfigDict(env_prefix="PODCREW_SIM_", extra="ignore")

    port: Port = 8200
    """TCP port to listen on."""
    max_body_bytes: int = Field(default=MESSAGES_API_MAX_BODY_BYTES, ge=1024)
    """Largest accepted request body (the Messages API takes 32 MiB)."""
    require_api_key: bool = True
    """Answer 401 authentication_error to calls with neither `x-api-key` nor `authorization`."""
    call_log_size: int = Field(default=100_000, ge=1, le=10_000_000)
    """How many calls `/_sim/calls` keeps."""
    cache_entries: int = Field(default=10_000, ge=1, le=1_000_000)
    """How many cached prompt prefixes are kept."""

    def fault_profile(self) -> FaultProfile:
        """The runtime-changeable part of these settings."""
        return FaultProfile.model_validate(self.model_dump(include=set(FaultProfile.model_fields)))
