"""The LLM layer: one interface (`LLMProvider`), providers chosen by `PODCREW_LLM_PROVIDER`."""

from __future__ import annotations

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


def create_provider(settings: LLMSettings) -> LLMProvider:
    """Build the configured provider, metered; called from a lifespan, never at import."""
    from podcrew_core.llm.metered import MeteredProvider

    if settings.provider == "offline":
        from podcrew_core.llm.offline import OfflineProvider

        return MeteredProvider(OfflineProvider(latency_s=settings.offline_latency_s))
    raise ValueError(f"unknown LLM provider {settings.provider!r}")  # pragma: no cover


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
