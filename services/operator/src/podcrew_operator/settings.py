"""Operator settings (`PODCREW_OPERATOR_*`), built by the entry point at start, never at import."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from podcrew_core.runtime.settings import LoggingSettings


class OperatorSettings(LoggingSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_OPERATOR_", extra="ignore")

    api_url: str = Field(default="http://127.0.0.1:8000", pattern=r"^https?://")
    """Base URL of the orchestrator API the runs are submitted to."""
    api_key: SecretStr | None = None
    """API key sent as `Authorization: Bearer` (from a Secret); unset: none is sent, which only
    an API without keys accepts."""
    request_timeout_s: float = Field(default=10.0, gt=0)
    """Time limit of one call to the orchestrator API."""
    poll_interval_s: float = Field(default=1.0, gt=0)
    """First wait between two reads of a run's progress."""
    poll_max_interval_s: float = Field(default=15.0, gt=0)
    """The wait grows by half while a run does not change, up to this."""
    retry_base_delay_s: float = Field(default=1.0, gt=0)
    """Backoff base after a failed call that gave no Retry-After (jittered, doubling per
    attempt)."""
    retry_max_delay_s: float = Field(default=60.0, gt=0)
    """Cap of that backoff (a Retry-After is honoured as is)."""
    max_concurrent_runs: int = Field(default=20, ge=1)
    """AgentRuns in flight at the orchestrator at once; more stay Pending."""
    finalizer_timeout_s: float = Field(default=60.0, ge=0)
    """How long a deleted AgentRun waits for its run to be cancelled before its finalizer is
    removed anyway (the orchestrator may be gone)."""
    namespaces: list[str] = Field(default_factory=list)
    """JSON list of namespaces to watch (`--namespace` adds to it)."""
    cluster_wide: bool = False
    """Watch AgentRuns in every namespace (`--all-namespaces`)."""
    liveness_endpoint: str | None = None
    """Serve kopf's liveness probe here, e.g. `http://0.0.0.0:8080/healthz`."""
    readiness_endpoint: str | None = Field(default=None, pattern=r"^http://[^/]+:\d+(/.*)?$")
    """Serve the readiness probe here, e.g. `http://0.0.0.0:8081/readyz`: ready once the operator
    has started and while the orchestrator api answers its own /readyz."""

    @field_validator("api_key")
    @classmethod
    def _refuse_empty_key(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty Secret key would send `Bearer ` and read as "unauthorized" forever.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("api_key is empty: unset it, or put the key in the Secret")
        return value

    @model_validator(mode="after")
    def _intervals_are_ordered(self) -> OperatorSettings:
        if self.poll_max_interval_s < self.poll_interval_s:
            raise ValueError("poll_max_interval_s must be at least poll_interval_s")
        if self.retry_max_delay_s < self.retry_base_delay_s:
            raise ValueError("retry_max_delay_s must be at least retry_base_delay_s")
        return self
