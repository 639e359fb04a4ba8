"""LLM configuration shared by every service (`PODCREW_LLM_*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from podcrew_core.llm.types import Stage


class LLMSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PODCREW_LLM_", extra="ignore")

    provider: Literal["offline"] = Field(
        default="offline", description="Which provider answers LLM calls."
    )
    plan_model: str = "claude-haiku-4-5"
    research_model: str = "claude-haiku-4-5"
    write_model: str = "claude-sonnet-4-5"
    offline_latency_s: float = Field(
        default=0.0,
        ge=0.0,
        le=60.0,
        description="Simulated think time per offline call, to make progress visible in demos.",
    )

    def model_for(self, stage: Stage) -> str:
        return {
            Stage.PLAN: self.plan_model,
            Stage.RESEARCH: self.research_model,
            Stage.WRITE: self.write_model,
        }[stage]
