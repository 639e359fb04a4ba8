"""The LLM layer: one interface (`LLMProvider`), providers chosen by `PODCREW_LLM_PROVIDER`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podcrew_core.llm.base import LLMProvider, output_tool, structured
from podcrew_core.llm.settings import LLMSettings
from podcrew_core.llm.types import (
    LLMRequest,
    LLMResponse,
    Message,
    Stage,
    StreamEnd,
    TextBlock,
    TextDelta,
    ToolChoice,
    ToolResultBlock,
    ToolSpec,
    ToolUseBlock,
)

if TYPE_CHECKING:
    from podcrew_core.runtime.redis import RedisClient


def _platform_provider(settings: LLMSettings) -> LLMProvider:
    """The provider that talks to the configured model platform, before any wrapper."""
    inner: LLMProvider
    if settings.provider == "offline":
        from podcrew_core.llm.offline import OfflineProvider

        inner = OfflineProvider(latency_s=settings.offline_latency_s)
    elif settings.provider == "simulated":
        from podcrew_core.llm.anthropic import AnthropicProvider
        from podcrew_core.llm.batch import BatchProvider

        inner = BatchProvider(
            AnthropicProvider(
                settings, base_url=settings.simulator_url, api_key="simulated", name="simulated"
            ),
            settings,
        )
    elif settings.provider in ("bedrock", "vertex"):
        from podcrew_core.llm.anthropic import AnthropicProvider

        # The platforms offer no Message Batches API of this shape: batch runs call as usual.
        inner = AnthropicProvider(settings, name=settings.provider, platform=settings.provider)
    else:
        from podcrew_core.llm.anthropic import AnthropicProvider
        from podcrew_core.llm.batch import BatchProvider

        key = settings.anthropic_api_key
        inner = BatchProvider(
            AnthropicProvider(settings, api_key=key.get_secret_value() if key else None),
            settings,
        )
    return inner


def create_provider(
    settings: LLMSettings, redis: RedisClient | None = None, key_prefix: str = "podcrew"
) -> LLMProvider:
    """Build the configured provider: priced and metered per attempt, each attempt's
    capacity taken from the rate limiter shared through `redis` (under `key_prefix`) when
    `ratelimit_enabled`, retried and guarded by a circuit breaker. Called from a lifespan,
    never at import."""
    from podcrew_core.llm.budgeted import BudgetedProvider
    from podcrew_core.llm.metered import MeteredProvider
    from podcrew_core.llm.resilient import ResilientProvider
    from podcrew_core.runtime.resilience import CircuitBreaker

    inner = _platform_provider(settings)
    breaker = CircuitBreaker(
        upstream=f"llm-{inner.name}",
        consecutive_failures=settings.breaker_consecutive_failures,
        failure_rate=settings.breaker_failure_rate,
        min_calls=settings.breaker_min_calls,
        window_s=settings.breaker_window_s,
        open_s=settings.breaker_open_s,
        half_open_probes=settings.breaker_half_open_probes,
    )
    # Outside in: retries and the breaker, then the budget check for each attempt, then
    # the shared rate limit (after the budget: a refused call takes no capacity; before the
    # metering: waiting for capacity is not the provider's latency), then pricing and
    # metering of what each attempt really cost.
    metered: LLMProvider = MeteredProvider(inner, settings.price_table())
    if settings.ratelimit_enabled and redis is not None:
        from podcrew_core.llm.ratelimit import RateLimitedProvider, RateLimiter

        limiter = RateLimiter(redis, settings, key_prefix)
        batches_apart = settings.provider in ("anthropic", "simulated")
        metered = RateLimitedProvider(metered, limiter, batches_apart=batches_apart)
    return ResilientProvider(BudgetedProvider(metered), breaker, settings.max_attempts)


__all__ = [
    "LLMProvider",
    "LLMRequest",
    "LLMResponse",
    "LLMSettings",
    "Message",
    "Stage",
    "StreamEnd",
    "TextBlock",
    "TextDelta",
    "ToolChoice",
    "ToolResultBlock",
    "ToolSpec",
    "ToolUseBlock",
    "create_provider",
    "output_tool",
    "structured",
]
