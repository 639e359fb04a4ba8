"""Users' feedback on a run's report, and an evaluator's scores for it.

Both live beside the run record, under keys built from the run's validated id
(`Keys.feedback`, `Keys.evaluation`), and expire with the run: a Lua step reads the run's
remaining TTL and gives it to what it writes, in the same step that checks the run still
exists, so no feedback outlives its run nor is written for a run that just expired.

Feedback is one per run and user (the API key's principal, `caller_principal`): the first
POST stores it; the same body again answers with what is stored (a retry after a lost
answer is harmless); another body is refused (`FeedbackExists`). Refusing rather than
replacing keeps `podcrew_run_feedback_total` exact: each user's judgement of a run is
counted once and never has to be taken back. An evaluation is one per run; a new PUT
replaces it, as a re-run of the evaluation tool should.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from podcrew_core.contracts.errors import (
    FeedbackExists,
    RunNotFinished,
    RunNotFound,
    ValidationFailed,
)
from podcrew_core.contracts.schemas import (
    Evaluation,
    EvaluationCreate,
    Feedback,
    FeedbackCreate,
    Run,
)
from podcrew_core.runtime.metrics import PROMPT_VERSION_LABEL, RUN_FEEDBACK
from podcrew_core.runtime.redis import RedisClient
from podcrew_orchestrator.keys import Keys

# Raised here; defined with the contracts so that a client rebuilds them from their slug.
__all__ = ["FeedbackExists", "RunFeedback", "RunNotFinished"]

# KEYS: run hash, feedback hash. ARGV: user, feedback JSON.
# Returns {0} when the run is gone, {1} when stored, {2, stored JSON} when the user gave some.
_GIVE = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return {0} end
local stored = redis.call('HGET', KEYS[2], ARGV[1])
if stored then return {2, stored} end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return {1}
"""
# KEYS: run hash, evaluation. ARGV: evaluation JSON. Returns 0 when the run is gone.
_EVALUATE = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -2 then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""
RATINGS = {1: "positive", -1: "negative"}


def _finished(run: Run, what: str) -> None:
    if not run.status.terminal:
        raise RunNotFinished(
            f"run {run.id} is {run.status.value}: {what} is for a finished run's report",
            run_status=run.status.value,
        )


def _check_source(run: Run, body: FeedbackCreate) -> None:
    """A source named wrong must be one the report lists."""
    if body.source is None:
        return
    numbers = {ref.number for ref in run.result.sources} if run.result else set()
    if body.source not in numbers:
        raise ValidationFailed(
            f"source {body.source} is not in the report's source list "
            f"({', '.join(map(str, sorted(numbers))) or 'none'})"
        )


def count_feedback(run: Run, score: int) -> None:
    """Count one user's feedback by the run's prompt versions and tier. Both ratings' series
    exist from the first feedback on, so a satisfaction ratio is 0 or 1, never "no data"."""
    version = PROMPT_VERSION_LABEL(run.prompt_version)
    for rating in RATINGS.values():
        RUN_FEEDBACK.labels(version, run.tier, rating)
    RUN_FEEDBACK.labels(version, run.tier, RATINGS[score]).inc()


class RunFeedback:
    """Feedback and evaluations of the runs of one key prefix."""

    def __init__(self, redis: RedisClient, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._give = redis.register_script(_GIVE)
        self._evaluate = redis.register_script(_EVALUATE)

    async def give(self, run: Run, user: str, body: FeedbackCreate) -> tuple[Feedback, bool]:
        """Store `user`'s feedback on `run` (a finished run of the caller's tenant); the
        feedback as stored, and whether this call stored it."""
        _finished(run, "feedback")
        _check_source(run, body)
        given = Feedback(**body.model_dump(), user=user, created_at=datetime.now(UTC))
        reply: Any = await self._give(
            keys=[self.keys.run(run.id), self.keys.feedback(run.id)],
            args=[user, given.model_dump_json()],
        )
        if reply[0] == 0:
            raise RunNotFound(f"no run with id {run.id!r}")
        if reply[0] == 1:
            count_feedback(run, body.score)
            return given, True
        stored = Feedback.model_validate_json(reply[1])
        if FeedbackCreate.model_validate(stored.model_dump(exclude={"user", "created_at"})) != body:
            raise FeedbackExists(
                f"user {user} gave other feedback on run {run.id} at "
                f"{stored.created_at.isoformat()}; feedback is given once per run and user"
            )
        return stored, False

    async def evaluate(self, run: Run, body: EvaluationCreate) -> Evaluation:
        """Store `body` as `run`'s evaluation, replacing any earlier one."""
        _finished(run, "an evaluation")
        evaluation = Evaluation(**body.model_dump(), evaluated_at=datetime.now(UTC))
        stored = await self._evaluate(
            keys=[self.keys.run(run.id), self.keys.evaluation(run.id)],
            args=[evaluation.model_dump_json()],
        )
        if not stored:
            raise RunNotFound(f"no run with id {run.id!r}")
        return evaluation

    async def feedback(self, run_id: str) -> list[Feedback]:
        """Every user's feedback on the run, oldest first."""
        return _feedback_list(await self.redis.hgetall(self.keys.feedback(run_id)))

    async def attach(self, run: Run) -> Run:
        """`run` with its feedback and evaluation, read in one round trip; a run not yet
        finished has none (both are refused until it is), so it costs no read while polled."""
        if not run.status.terminal:
            return run
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.feedback(run.id))
            pipe.get(self.keys.evaluation(run.id))
            given, evaluation = await pipe.execute()
        run.feedback = _feedback_list(given)
        run.evaluation = _evaluation(evaluation)
        return run


def _feedback_list(stored: Mapping[Any, Any]) -> list[Feedback]:
    return sorted(
        (Feedback.model_validate_json(data) for data in stored.values()),
        key=lambda f: (f.created_at, f.user),
    )


def _evaluation(stored: Any) -> Evaluation | None:
    return Evaluation.model_validate_json(stored) if stored else None
