"""LLM configuration shared by every service (`PODCREW_LLM_*`).

The Anthropic key and endpoint are the SDK's own variables, `ANTHROPIC_API_KEY` and
`ANTHROPIC_BASE_URL`, so a gateway or proxy can sit in between with no podcrew setting; the key
is read here too, so it may come from a file (`ANTHROPIC_API_KEY_FILE`) like every secret.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from podcrew_core.llm.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from podcrew_core.llm.types import Stage
from podcrew_core.runtime.settings import PodcrewSettings


class StageModels(BaseModel):
    plan: str
    research: str
    write: str

    def for_stage(self, stage: Stage) -> str:
        return {Stage.PLAN: self.plan, Stage.RESEARCH: self.research, Stage.WRITE: self.write}[
            stage
        ]


class ModelRateLimit(BaseModel):
    """One model's limits at the provider account, per minute (the API's units)."""

    requests_per_minute: int = Field(ge=1)
    input_tokens_per_minute: int = Field(ge=1)
    output_tokens_per_minute: int = Field(ge=1)


def _default_tiers() -> dict[str, StageModels]:
    return {
        "economy": StageModels(
            plan="claude-haiku-4-5", research="claude-haiku-4-5", write="claude-haiku-4-5"
        ),
        "premium": StageModels(
            plan="claude-sonnet-4-5", research="claude-sonnet-4-5", write="claude-opus-4-5"
        ),
    }


class LLMSettings(PodcrewSettings):
    model_config = SettingsConfigDict(
        env_prefix="PODCREW_LLM_", extra="ignore", use_attribute_docstrings=True
    )

    provider: Literal["offline", "anthropic", "simulated", "bedrock", "vertex"] = "offline"
    """offline: deterministic, no network (default). anthropic: Claude through the official SDK
    (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL). simulated: the same SDK against podcrew's
    simulated Messages API at PODCREW_LLM_SIMULATOR_URL. bedrock / vertex: Claude on Amazon
    Bedrock or Google Vertex AI through the SDK's AnthropicBedrock / AnthropicVertex (the
    podcrew-core extras of the same names), credentials from the platform's workload
    identity."""
    plan_model: str = "claude-haiku-4-5"
    """Planner model (standard)."""
    research_model: str = "claude-haiku-4-5"
    """Research-loop model (standard tier)."""
    write_model: str = "claude-sonnet-4-5"
    """Writer model (standard)."""
    tiers: dict[str, StageModels] = Field(default_factory=_default_tiers)
    """JSON: models per stage for the economy and premium tiers a run may ask for, e.g.
    {"premium": {"plan": …, "research": …, "write": …}}."""
    prices: dict[str, ModelPrice] = Field(default_factory=lambda: dict(DEFAULT_PRICES))
    """JSON: $ per million tokens per model (input, output, cache_write, cache_read); defaults
    are current Claude list prices."""
    fallback_price: ModelPrice = ModelPrice(input=15.0, output=75.0)
    """JSON: price of a model missing from the table (deliberately high)."""
    simulator_url: str = "http://127.0.0.1:8200"
    """Base URL of the simulated Messages API."""
    call_timeout_s: float = Field(default=120.0, gt=0)
    """Upper bound on one LLM call (the deadline may cut it)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    """TCP/TLS connect timeout."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts per LLM call, the first included."""
    retry_budget: int = Field(default=8, ge=0)
    """Retries one run may spend over all its LLM calls."""
    breaker_consecutive_failures: int = Field(default=5, ge=1)
    """Failures in a row that open the LLM circuit breaker."""
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Failure ratio in the window that opens it."""
    breaker_min_calls: int = Field(default=10, ge=1)
    """Calls in the window before the rate counts."""
    breaker_window_s: float = Field(default=30.0, gt=0)
    """The failure-rate window."""
    breaker_open_s: float = Field(default=15.0, gt=0)
    """How long the breaker stays open before probing."""
    breaker_half_open_probes: int = Field(default=1, ge=1)
    """Calls let through while half-open."""
    max_connections: int = Field(default=256, ge=1)
    """Connection pool size to the LLM endpoint."""
    offline_latency_s: float = Field(default=0.0, ge=0.0, le=60.0)
    """Simulated think time per offline call, to make progress visible in demos."""
    batch_poll_initial_s: float = Field(default=5.0, gt=0, le=600)
    """First wait before asking whether a batch run's Message Batch has ended; each further
    wait doubles, up to batch_poll_max_s."""
    batch_poll_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait between two polls of a Message Batch."""
    bedrock_region: str | None = None
    """AWS region of Bedrock (unset: AWS_REGION / AWS_DEFAULT_REGION)."""
    bedrock_model_prefix: str = ""
    """Prefix of Bedrock model ids, to call through a cross-region inference profile, e.g.
    "us." or "global." (newer Claude models are offered only so in most regions)."""
    vertex_region: str | None = None
    """Vertex AI region, e.g. "global" or "us-east5" (unset: CLOUD_ML_REGION)."""
    vertex_project: str | None = None
    """Google Cloud project of Vertex AI (unset: ANTHROPIC_VERTEX_PROJECT_ID, then the
    application default credentials' project)."""
    vertex_access_token: SecretStr | None = None
    """A fixed OAuth access token for Vertex AI; leave unset to use the application default
    credentials (GKE Workload Identity), which refresh themselves."""
    platform_models: dict[str, str] = Field(default_factory=dict)
    """JSON: model id on Bedrock or Vertex per Claude model, overriding the built-in table,
    e.g. {"claude-sonnet-4-5": "arn:aws:bedrock:…:application-inference-profile/…"}."""
    ratelimit_enabled: bool = False
    """Acquire every LLM call's request, input and output tokens from one limiter shared
    through Redis by every process that calls the provider account (docs/runbooks.md)."""
    ratelimit_account: str = Field(default="default", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """Name of the provider account the limits belong to: installations that share an
    account and a Redis share its limiter by using the same name."""
    ratelimits: dict[str, ModelRateLimit] = Field(default_factory=dict)
    """JSON: the account's limits per model, e.g. {"claude-haiku-4-5":
    {"requests_per_minute": 50, "input_tokens_per_minute": 50000,
    "output_tokens_per_minute": 10000}}; a model missing here has PODCREW_LLM_RATELIMIT_DEFAULT."""
    ratelimit_default: ModelRateLimit = ModelRateLimit(
        requests_per_minute=50, input_tokens_per_minute=30_000, output_tokens_per_minute=8_000
    )
    """JSON: the limits of a model missing from PODCREW_LLM_RATELIMITS (Anthropic's lowest tier)."""
    ratelimit_burst_s: float = Field(default=60.0, gt=0, le=60.0)
    """Seconds of the per-minute rate one bucket holds, so the most a burst may take (the API's
    buckets hold a minute; less smooths the calls out)."""
    ratelimit_recovery_s: float = Field(default=60.0, gt=0, le=3600.0)
    """A 429 halves the shared rate; it then climbs back in a straight line, from nothing to
    the configured rate in this many seconds (from half, in half of them)."""
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias="ANTHROPIC_API_KEY")
    """Anthropic API key (provider anthropic), the SDK's own variable."""

    @model_validator(mode="after")
    def _standard_tier(self) -> LLMSettings:
        self.tiers.setdefault("standard", self.standard)
        return self

    @property
    def standard(self) -> StageModels:
        return StageModels(
            plan=self.plan_model, research=self.research_model, write=self.write_model
        )

    def models(self, tier: str | None = None) -> StageModels:
        """The models of `tier` (default: standard)."""
        return self.tiers.get(tier or "standard", self.standard)

    def model_for(self, stage: Stage, tier: str | None = None) -> str:
        return self.models(tier).for_stage(stage)

    def ratelimit_for(self, model: str) -> ModelRateLimit:
        """The account's limits for `model`."""
        return self.ratelimits.get(model, self.ratelimit_default)

    def price_table(self) -> PriceTable:
        return PriceTable(self.prices, self.fallback_price)
