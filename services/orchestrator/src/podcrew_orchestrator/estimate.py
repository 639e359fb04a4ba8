"""`POST /v1/estimate`: the tokens and cost a question is likely to take, before running it.

A heuristic, not a quote: it counts the calls the pipeline makes (one plan, two to
`max_steps` research turns per sub-question, one write) and sizes each from the prompt
lengths podcrew sends, calibrated on runs through the simulated Messages API. The range
spans the fewest sub-questions and shortest research loops to the most and longest. The
cost is given twice: as an interactive run, and as a batch run, whose calls all go through the
Message Batches API at its rate.
"""

from __future__ import annotations

from podcrew_core.contracts.schemas import MIN_SUBQUESTIONS, Estimate, Range, RunCreate, Usage
from podcrew_core.llm import LLMSettings, Stage
from podcrew_core.llm.pricing import BATCH_RATE
from podcrew_core.llm.tokens import estimate_tokens

# Sizes in tokens, measured on simulated runs (system prompt + tool schemas dominate).
PLAN_IN, PLAN_OUT = 450, 120
RESEARCH_TURN_IN, RESEARCH_TURN_OUT = 1_400, 250
TOOL_RESULT = 900
WRITE_IN_PER_FINDING, WRITE_IN_BASE, WRITE_OUT_PER_SECTION = 90, 400, 220
FINDINGS_PER_SECTION = 4
RESEARCH_TURNS = (2, 4)


def _usage(question_tokens: int, sections: int, turns: int) -> dict[Stage, Usage]:
    research_in = sum(
        RESEARCH_TURN_IN + question_tokens + t * (TOOL_RESULT + RESEARCH_TURN_OUT)
        for t in range(turns)
    )
    return {
        Stage.PLAN: Usage(input_tokens=PLAN_IN + question_tokens, output_tokens=PLAN_OUT),
        Stage.RESEARCH: Usage(
            input_tokens=sections * research_in,
            output_tokens=sections * turns * RESEARCH_TURN_OUT,
        ),
        Stage.WRITE: Usage(
            input_tokens=WRITE_IN_BASE + sections * FINDINGS_PER_SECTION * WRITE_IN_PER_FINDING,
            output_tokens=sections * WRITE_OUT_PER_SECTION,
        ),
    }


def estimate(body: RunCreate, llm: LLMSettings) -> Estimate:
    models = llm.models(body.tier)
    prices = llm.price_table()
    question_tokens = estimate_tokens(body.question)
    bounds = []
    for sections, turns in (
        (MIN_SUBQUESTIONS, RESEARCH_TURNS[0]),
        (body.max_subquestions, RESEARCH_TURNS[1]),
    ):
        by_stage = _usage(question_tokens, sections, turns)
        tokens = sum(u.total_tokens for u in by_stage.values())
        cost = sum(prices.cost(models.for_stage(stage), u) for stage, u in by_stage.items())
        calls = 1 + sections * turns + 1
        bounds.append((tokens, cost, calls))
    (t_lo, c_lo, n_lo), (t_hi, c_hi, n_hi) = bounds
    return Estimate(
        tokens=Range(low=t_lo, high=t_hi),
        cost_usd=Range(low=round(c_lo, 6), high=round(c_hi, 6)),
        cost_usd_batch=Range(low=round(c_lo * BATCH_RATE, 6), high=round(c_hi * BATCH_RATE, 6)),
        llm_calls=Range(low=n_lo, high=n_hi),
        models=models.model_dump(),
    )
