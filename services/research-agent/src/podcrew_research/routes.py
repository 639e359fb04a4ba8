"""`POST /v1/research`: admission, deadline and the research loop; nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from podcrew_core.contracts.errors import PROBLEM_CONTENT_TYPE
from podcrew_core.contracts.hop import Hop
from podcrew_core.contracts.schemas import ResearchRequest, ResearchResponse
from podcrew_core.runtime.app import JSONBody
from podcrew_core.runtime.disconnect import unless_disconnected
from podcrew_core.runtime.logging import bind_run
from podcrew_core.runtime.scope import open_hop
from podcrew_core.runtime.tracing import record_prompt_version
from podcrew_research.deps import (
    LedgerDep,
    LLMSettingsDep,
    ResearcherDep,
    SettingsDep,
    SlotsDep,
)


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_CONTENT_TYPE: {}}}


router = APIRouter(prefix="/v1", tags=["research"])


@router.post(
    "/research",
    summary="Research one sub-question with the tool loop",
    dependencies=[JSONBody],
    responses={
        400: _problem("The body is not valid JSON, or a hop header is malformed"),
        401: _problem("No valid service token"),
        415: _problem("The body is not JSON"),
        422: _problem("The body does not match ResearchRequest"),
        502: _problem("The model failed or returned invalid findings"),
        503: _problem("No research slot freed up before the deadline"),
        504: _problem("The deadline expired, or was too close to start"),
    },
)
async def research(
    body: ResearchRequest,
    request: Request,
    settings: SettingsDep,
    llm: LLMSettingsDep,
    researcher: ResearcherDep,
    slots: SlotsDep,
    ledger: LedgerDep,
) -> ResearchResponse:
    """Answer `sub_question` with findings and their sources, within the caller's deadline
    (`x-podcrew-deadline-ms`, else the service default)."""
    bind_run(body.run_id)
    hop = Hop.from_headers(
        request.headers,
        default_deadline_s=settings.default_deadline_s,
        default_retries=llm.retry_budget,
        what="research",
    )
    async with (
        open_hop(hop, ledger, what="research"),
        slots.hold(hop.deadline),
    ):
        response = await unless_disconnected(
            request,
            researcher.research(
                sub_question=body.sub_question,
                question=body.question,
                max_steps=body.max_steps,
                model=body.model,
            ),
        )
    record_prompt_version(response.prompt_version)
    return response.model_copy(update={"retries": hop.retries.spent})
