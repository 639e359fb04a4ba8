"""Wire models shared by every hop: the public run API and the internal agent contracts.

Both sides of each call import these types, so a field renamed here is renamed everywhere.
Internal bodies are versioned by the URL (`/v1/...`); a breaking change gets a new path.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, field_validator

from podcrew_core.contracts.hop import Priority

MIN_SUBQUESTIONS = 2
MAX_SUBQUESTIONS = 6
MAX_QUESTION_CHARS = 4000
# A sub-question may be as long as the question: a question that does not split (one long
# clause) is planned as itself, and a plan the API's own question cannot fit would make a
# question the API accepts one the planner cannot plan.
MAX_SUBQUESTION_CHARS = MAX_QUESTION_CHARS

Tier = Literal["economy", "standard", "premium"]

Question = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=MAX_QUESTION_CHARS)
]


class _Wire(BaseModel):
    """Base for every wire body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED})


class Usage(_Wire):
    """Token counts of one LLM call or the sum over many."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    llm_calls: int = 0
    cost_usd: float = Field(default=0.0, description="Cost at the configured price table.")

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            cost_usd=self.cost_usd + other.cost_usd,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            llm_calls=self.llm_calls + other.llm_calls,
        )

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
        )


# --- public API -------------------------------------------------------------------------


class RunBudget(_Wire):
    """Limits a client asks for one run; unset fields take the server's defaults (which are
    also the caps). The run record holds what is in force instead: `ResolvedBudget`.

    Numbers are strict: `"10"` or `true` is a mistake in the client, not a budget."""

    max_tokens: int | None = Field(
        default=None, strict=True, ge=1, le=10**12, description="Tokens over all LLM calls."
    )
    max_cost_usd: float | None = Field(
        default=None, strict=True, gt=0, le=1e9, description="Spend over all calls."
    )
    # A batch run may wait up to the Message Batches API's 24 hours; the server caps each
    # priority lower (its run_deadline_s and batch_run_deadline_s).
    deadline_s: float | None = Field(
        default=None, strict=True, gt=0, le=86_400, description="Seconds from start to result."
    )


class ResolvedBudget(_Wire):
    """The limits in force for one run: what it asked for within the server's caps, resolved
    once when the run is accepted, so every later reader uses these values as they are."""

    max_tokens: int = Field(ge=1, description="Tokens over all LLM calls.")
    max_cost_usd: float = Field(gt=0, description="Spend over all calls.")
    deadline_s: float = Field(gt=0, description="Seconds from start to result.")


class RunCreate(_Wire):
    """Body of `POST /v1/runs`."""

    question: Question = Field(description="The research question, 3 to 4000 characters.")
    max_subquestions: int = Field(
        default=4,
        strict=True,
        ge=MIN_SUBQUESTIONS,
        le=MAX_SUBQUESTIONS,
        description="Upper bound on how many sub-questions the planner may fan out.",
    )
    tier: Tier = Field(
        default="standard",
        description="Model tier: economy (cheapest models), standard, premium (strongest).",
    )
    thread_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="Continue a conversation: the planner sees this thread's earlier turns.",
    )
    callback_url: str | None = Field(
        default=None,
        max_length=2000,
        pattern=r"^https?://",
        description="POSTed the final run, signed with HMAC-SHA256, when the run ends.",
    )
    budget: RunBudget = Field(default_factory=RunBudget)
    priority: Priority = Field(
        default="interactive",
        description="batch: the run's LLM calls go through the Message Batches API at half "
        "price and may take hours (needs a deadline of at least 10 minutes), and they wait "
        "while interactive runs' calls wait for the provider's shared rate limit.",
    )


class Source(_Wire):
    """Where a finding came from: a knowledge-base document or a fetched URL."""

    id: str = Field(description="Stable identifier, e.g. 'kb:tut-generators#2' or a URL.")
    title: str
    url: str | None = None


class Finding(_Wire):
    """One claim a research agent found, with the source that supports it."""

    claim: str = Field(min_length=1, max_length=2000)
    source: Source


class SourceRef(_Wire):
    """A numbered source as cited in a report: `[n]` in the text refers to `number`."""

    number: int = Field(ge=1)
    source: Source


class RunResult(_Wire):
    report: str = Field(description="Markdown report; claims cite sources as [n].")
    sources: list[SourceRef]
    unresearched: list[str] = Field(
        default_factory=list, description="Sub-questions that could not be researched."
    )


class RunError(_Wire):
    type: str
    detail: str


class CacheMark(_Wire):
    """How a cached run was answered: `result`, the same question's result; `semantic`, the
    result of an earlier run of the tenant's whose question was close in meaning."""

    kind: Literal["result", "semantic"]
    similarity: float | None = Field(
        default=None, description="Cosine similarity of the two questions (semantic only)."
    )
    source_run: str | None = Field(default=None, description="The run whose result answered.")


MAX_FEEDBACK_COMMENT_CHARS = 2000
MAX_EVALUATION_SCORES = 32
PROMPT_VERSION_DESCRIPTION = (
    "The prompt sets the run used, `planner:<hash>,research:<hash>,writer:<hash>` (each a "
    "set's name and the short SHA-256 of its exact texts and tool definitions); null on runs "
    "recorded before prompt versions were."
)


class FeedbackCreate(_Wire):
    """Body of `POST /v1/runs/{id}/feedback`: one user's judgement of a run's report.

    Numbers are strict, as budgets are: `true`, `1.0` or `"1"` is a mistake in the client,
    not a score."""

    score: StrictInt = Field(
        ge=-1,
        le=1,
        json_schema_extra={"enum": [-1, 1]},
        description="Thumbs: 1 the report was useful, -1 it was not.",
    )
    comment: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_FEEDBACK_COMMENT_CHARS,
        description="What was good or wrong, in the user's words.",
    )
    section: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SUBQUESTION_CHARS,
        description="The report section that was wrong: its heading (a sub-question).",
    )
    source: StrictInt | None = Field(
        default=None, ge=1, description="The number `n` of the cited source `[n]` that was wrong."
    )

    @field_validator("score")
    @classmethod
    def _thumbs(cls, score: int) -> int:
        if score == 0:
            raise ValueError("score is 1 (useful) or -1 (not useful)")
        return score


class Feedback(FeedbackCreate):
    """A user's feedback as stored with the run."""

    user: str = Field(description="Who gave it: the API key's principal, never the key.")
    created_at: datetime


EvaluationScoreName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")]


class EvaluationCreate(_Wire):
    """Body of `PUT /v1/runs/{id}/evaluation`: scores an evaluator gave the run's report."""

    scores: dict[EvaluationScoreName, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        min_length=1,
        max_length=MAX_EVALUATION_SCORES,
        description="Score name (lowercase, e.g. `citation_validity`) to its value.",
    )
    evaluator: str = Field(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e][\x20-\x7e]*$",
        description="What produced the scores, e.g. `podcrew-eval/1 lexical`.",
    )


class Evaluation(EvaluationCreate):
    """A run's evaluation as stored with the run; a new PUT replaces it."""

    evaluated_at: datetime


class Run(_Wire):
    """A run as `GET /v1/runs/{id}` returns it."""

    id: str
    status: RunStatus
    tenant: str = "default"
    question: str
    max_subquestions: int = 4
    tier: Tier = "standard"
    priority: Priority = "interactive"
    thread_id: str | None = None
    callback_url: str | None = None
    budget: ResolvedBudget
    cached: bool = Field(default=False, description="Answered from a cache.")
    cache: CacheMark | None = Field(
        default=None, description="Which cache answered the run, when one did."
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    sub_questions: list[str] = Field(default_factory=list)
    result: RunResult | None = None
    error: RunError | None = None
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    trace_id: str | None = None
    attempts: int = 0
    prompt_version: str | None = Field(default=None, description=PROMPT_VERSION_DESCRIPTION)
    feedback: list[Feedback] = Field(
        default_factory=list, description="Users' feedback on the report, one per user."
    )
    evaluation: Evaluation | None = Field(
        default=None, description="The latest evaluation's scores, once the run is evaluated."
    )


class Range(BaseModel):
    low: float
    high: float


class Estimate(BaseModel):
    """What `POST /v1/estimate` answers: a question's likely tokens, cost and LLM calls."""

    tokens: Range
    cost_usd: Range = Field(description="As an interactive run (the list prices).")
    cost_usd_batch: Range = Field(
        description='As a run with priority "batch": every call at the Message Batches rate.'
    )
    llm_calls: Range
    models: dict[str, str]


class RunAccepted(_Wire):
    id: str
    status: RunStatus


class EventType(StrEnum):
    RUN_QUEUED = "run.queued"
    RUN_REQUEUED = "run.requeued"
    CACHE_HIT = "cache.hit"
    RUN_STARTED = "run.started"
    RUN_PLANNED = "run.planned"
    RESEARCH_STARTED = "research.started"
    TOOL_CALLED = "tool.called"
    RESEARCH_FINISHED = "research.finished"
    WRITER_STARTED = "writer.started"
    WRITER_DELTA = "writer.delta"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL_EVENTS


_TERMINAL_EVENTS = frozenset(
    {EventType.RUN_SUCCEEDED, EventType.RUN_FAILED, EventType.RUN_CANCELLED}
)


# --- internal agent contracts ------------------------------------------------------------


class Plan(_Wire):
    """The planner's structured output (forced tool use)."""

    sub_questions: list[
        Annotated[str, StringConstraints(min_length=3, max_length=MAX_SUBQUESTION_CHARS)]
    ] = Field(min_length=MIN_SUBQUESTIONS, max_length=MAX_SUBQUESTIONS)


class FindingsReport(_Wire):
    """The research loop's structured output (forced tool use)."""

    findings: list[Finding] = Field(max_length=12)


class ResearchRequest(_Wire):
    """Body of the research agent's `POST /v1/research`."""

    run_id: str
    question: str = Field(description="The run's original question, for context.")
    sub_question: str = Field(min_length=3, max_length=MAX_SUBQUESTION_CHARS)
    max_steps: int | None = Field(default=None, ge=1, le=20)
    model: str | None = Field(default=None, description="Model to use (default: the agent's).")


class ToolCall(_Wire):
    name: str
    input: dict[str, Any]
    ok: bool
    results: int = 0
    error: str | None = None
    duration_ms: float = 0.0
    cached: bool = Field(default=False, description="Answered from the tool-result cache.")


class ResearchResponse(_Wire):
    sub_question: str
    findings: list[Finding]
    tool_calls: list[ToolCall]
    steps: int
    usage: Usage
    model: str
    retries: int = Field(default=0, description="LLM retries this call spent of its budget.")
    unavailable_tools: list[str] = Field(
        default_factory=list,
        description="Tool servers that could not be reached, so their tools were not offered "
        "(an MCP server as 'mcp:<name>').",
    )
    prompt_version: str | None = Field(
        default=None, description="The research prompt set this call used (`research:<hash>`)."
    )


class ResearchedSection(_Wire):
    sub_question: str
    findings: list[Finding]


class WriteRequest(_Wire):
    """Body of the writer agent's `POST /v1/write` and `POST /v1/write/stream`."""

    run_id: str
    question: str
    sections: list[ResearchedSection]
    unresearched: list[str] = Field(default_factory=list)
    model: str | None = Field(default=None, description="Model to use (default: the agent's).")


class WriteResponse(_Wire):
    report: str
    sources: list[SourceRef]
    usage: Usage
    model: str
    retries: int = 0
    prompt_version: str | None = Field(
        default=None, description="The writer prompt set this call used (`writer:<hash>`)."
    )


class WriteDelta(_Wire):
    """One streamed piece of the report (`event: delta` on the writer's stream)."""

    text: str


StreamEventName = Literal["delta", "done", "error"]
