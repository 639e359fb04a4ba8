"""Claude on a cloud platform: Amazon Bedrock and Google Vertex AI, through the SDK's own
`AsyncAnthropicBedrock` and `AsyncAnthropicVertex` clients (the `bedrock` and `vertex` extras
of podcrew-core: botocore signs Bedrock's requests and decodes its event stream, google-auth
fetches Vertex's access tokens).

podcrew names models as the Anthropic API does (`claude-sonnet-4-5`); each platform has its
own ids, so a request's model is mapped here on the way out (`platform_model`) and the
answer is priced, metered and logged under podcrew's name, as with the first-party API.
Credentials never come from podcrew's settings: botocore's default chain (IRSA's web
identity token on EKS, the instance role, the environment) and Google's application default
credentials (GKE Workload Identity) supply them, as the chart documents.
"""

from __future__ import annotations

from typing import Literal

import anthropic
import httpx2
from pydantic import BaseModel

from podcrew_core.llm.settings import LLMSettings

Platform = Literal["bedrock", "vertex"]
PlatformClient = anthropic.AsyncAnthropicBedrock | anthropic.AsyncAnthropicVertex


class PlatformIds(BaseModel):
    """One model's id on each platform."""

    bedrock: str
    vertex: str


# Claude model id → the platforms' ids of the snapshot podcrew's prices are for (Bedrock's
# model ids; Vertex's `model@version`). A model missing here is sent as named, so a
# platform id may be configured directly.
PLATFORM_MODELS: dict[str, PlatformIds] = {
    "claude-haiku-4-5": PlatformIds(
        bedrock="anthropic.claude-haiku-4-5-20251001-v1:0", vertex="claude-haiku-4-5@20251001"
    ),
    "claude-sonnet-4-5": PlatformIds(
        bedrock="anthropic.claude-sonnet-4-5-20250929-v1:0", vertex="claude-sonnet-4-5@20250929"
    ),
    "claude-sonnet-4": PlatformIds(
        bedrock="anthropic.claude-sonnet-4-20250514-v1:0", vertex="claude-sonnet-4@20250514"
    ),
    "claude-opus-4-5": PlatformIds(
        bedrock="anthropic.claude-opus-4-5-20251101-v1:0", vertex="claude-opus-4-5@20251101"
    ),
    "claude-opus-4-1": PlatformIds(
        bedrock="anthropic.claude-opus-4-1-20250805-v1:0", vertex="claude-opus-4-1@20250805"
    ),
    "claude-3-5-haiku": PlatformIds(
        bedrock="anthropic.claude-3-5-haiku-20241022-v1:0", vertex="claude-3-5-haiku@20241022"
    ),
}


def platform_model(platform: Platform, model: str, settings: LLMSettings) -> str:
    """The id `platform` knows `model` by: the configured override, then the table (with the
    Bedrock inference-profile prefix, e.g. `us.`, which newer models require), else as is."""
    if model in settings.platform_models:
        return settings.platform_models[model]
    ids = PLATFORM_MODELS.get(model)
    if ids is None:
        return model
    if platform == "bedrock":
        return f"{settings.bedrock_model_prefix}{ids.bedrock}"
    return ids.vertex


def platform_client(
    platform: Platform, settings: LLMSettings, http: httpx2.AsyncClient, *, tracing: bool
) -> PlatformClient:
    """The SDK's client for `platform`, sending over `http`, with its own retries off.

    Unset settings leave the SDK its own variables: `AWS_REGION`, `ANTHROPIC_BEDROCK_BASE_URL`
    and `AWS_BEARER_TOKEN_BEDROCK`; `CLOUD_ML_REGION`, `ANTHROPIC_VERTEX_PROJECT_ID` and
    `ANTHROPIC_VERTEX_BASE_URL`."""
    telemetry: Literal[False] | None = None if tracing else False
    if platform == "bedrock":
        return anthropic.AsyncAnthropicBedrock(
            aws_region=settings.bedrock_region,
            max_retries=0,
            http_client=http,
            open_telemetry=telemetry,
        )
    token = settings.vertex_access_token
    return anthropic.AsyncAnthropicVertex(
        region=settings.vertex_region or anthropic.NOT_GIVEN,
        project_id=settings.vertex_project or anthropic.NOT_GIVEN,
        access_token=token.get_secret_value() if token else None,
        max_retries=0,
        http_client=http,
        open_telemetry=telemetry,
    )
