"""`POST /v1/research`: admission, deadline and the research loop; nothing else."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from podcrew_core.app import JSONBody
from podcrew_core.deadline import DEADLINE_HEADER, Deadline
from podcrew_core.errors import PROBLEM_CONTENT_TYPE
from podcrew_core.logging import bind_run
from podcrew_core.schemas import ResearchRequest, ResearchResponse
from podcrew_research.deps import ResearcherDep, SettingsDep, SlotsDep

# Less time than this cannot cover even one LLM call: refuse instead of starting.
MIN_REMAINING_S = 0.05


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {PROBLEM_CONTENT_TYPE: {}}}


router = APIRouter(prefix="/v1", tags=["research"])


@router.post(
    "/research",
    summary="Research one sub-question with the tool loop",
    dependencies=[JSONBody],
    responses={
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
    researcher: ResearcherDep,
    slots: SlotsDep,
) -> ResearchResponse:
    """Answer `sub_question` with findings and their sources, within the caller's deadline
    (`x-podcrew-deadline-ms`, else the service default)."""
    deadline = Deadline.from_header(
        request.headers.get(DEADLINE_HEADER), settings.default_deadline_s
    )
    deadline.require(MIN_REMAINING_S, "research")
    bind_run(body.run_id)
    async with slots.hold(deadline):
        return await researcher.research(
            sub_question=body.sub_question,
            question=body.question,
            deadline=deadline,
            max_steps=body.max_steps,
        )
