"""Accepting a run: idempotency, coalescing, the result cache, the semantic cache, then
tenant limits.

Order matters. An `Idempotency-Key` is reserved first (same key + same body → the same
run; a different body → 409), then an identical question already running for the tenant is
joined (coalescing), then a cached result answers at once; only a run that will really
execute is charged against the tenant's rate and concurrency limits and enqueued.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import structlog
from prometheus_client import Counter

from podcrew_core.contracts.errors import (
    Conflict,
    NotReplicated,
    PodcrewError,
    ValidationFailed,
)
from podcrew_core.contracts.hop import MIN_BATCH_DEADLINE_S, Priority
from podcrew_core.contracts.schemas import (
    CacheMark,
    EventType,
    ResolvedBudget,
    Run,
    RunBudget,
    RunCreate,
    RunResult,
    RunStatus,
)
from podcrew_core.runtime.egress import EgressGuard, UnresolvableHost
from podcrew_core.runtime.logging import log_run_audit
from podcrew_core.runtime.metrics import CACHE_REQUESTS
from podcrew_core.runtime.redis import RedisClient, ReplicationTimeout
from podcrew_core.runtime.tracing import current_trace_id
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.limits import TenantLimiter
from podcrew_orchestrator.semantic import SemanticCache
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.webhooks import WebhooksNotConfigured

RUNS_COALESCED = Counter(
    "podcrew_runs_coalesced", "Submissions joined to an identical run already in progress."
)

log = structlog.get_logger(__name__)


def body_digest(body: RunCreate) -> str:
    canonical = orjson.dumps(body.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


def run_digest(run: Run) -> str:
    """What makes two runs the same work: tenant, question (case and spacing aside), shape."""
    normal = " ".join(run.question.lower().split())
    key = f"{run.tenant}\n{normal}\n{run.max_subquestions}\n{run.tier}"
    return hashlib.sha256(key.encode()).hexdigest()


def budget_caps(
    settings: OrchestratorSettings, priority: Priority = "interactive"
) -> ResolvedBudget:
    """The server's limits for a run of `priority`: the budget of a run that asks for none,
    and the most a run may ask for (a batch run's deadline has a cap of its own)."""
    return ResolvedBudget(
        max_tokens=settings.max_run_tokens,
        max_cost_usd=settings.max_run_cost_usd,
        deadline_s=settings.deadline_cap(priority),
    )


def resolve_budget(asked: RunBudget, caps: ResolvedBudget) -> ResolvedBudget:
    """The budget in force for a run: each limit it asked for, within the server's cap, and
    the cap where it asked for none. Done once, at acceptance: the run record holds the
    result and nothing downstream applies a default again."""
    return ResolvedBudget(
        max_tokens=min(asked.max_tokens or caps.max_tokens, caps.max_tokens),
        max_cost_usd=min(asked.max_cost_usd or caps.max_cost_usd, caps.max_cost_usd),
        deadline_s=min(asked.deadline_s or caps.deadline_s, caps.deadline_s),
    )


def _not_replicated(run: Run, why: str) -> NotReplicated:
    """`503 not-replicated` for `run`, which the replicas do not hold yet: `why`."""
    return NotReplicated(f"run {run.id}: {why}", run_id=run.id, headers={"Retry-After": "1"})


@dataclass(frozen=True, slots=True)
class Submitted:
    run: Run
    created: bool  # False: an existing run answers (idempotent replay or coalesced)


class Submissions:
    def __init__(
        self,
        redis: RedisClient,
        keys: Keys,
        store: RunStore,
        limiter: TenantLimiter,
        settings: OrchestratorSettings,
        *,
        callbacks: EgressGuard | None = None,
        semantic: SemanticCache | None = None,
    ) -> None:
        self.semantic = semantic  # None: the semantic cache is off
        # The guard webhook deliveries go through; None: this installation sends none.
        self.callbacks = callbacks
        self.redis = redis
        self.keys = keys
        self.store = store
        self.limiter = limiter
        self.settings = settings
        self.budget_caps = budget_caps(settings)
        self.batch_caps = budget_caps(settings, "batch")

    async def submit(self, tenant: str, body: RunCreate, idempotency_key: str | None) -> Submitted:
        if body.callback_url is not None:
            await self._check_callback(body.callback_url)
        caps = self.batch_caps if body.priority == "batch" else self.budget_caps
        run = Run(
            id=self.keys.new_run_id(),
            status=RunStatus.QUEUED,
            tenant=tenant,
            question=body.question,
            max_subquestions=body.max_subquestions,
            tier=body.tier,
            priority=body.priority,
            thread_id=body.thread_id,
            callback_url=body.callback_url,
            budget=resolve_budget(body.budget, caps),
            created_at=datetime.now(UTC),
            trace_id=current_trace_id(),
        )
        if run.priority == "batch" and run.budget.deadline_s < MIN_BATCH_DEADLINE_S:
            raise ValidationFailed(
                f"a batch run needs a deadline of at least {MIN_BATCH_DEADLINE_S:g} s (its LLM "
                f"calls wait for the Message Batches API), and this one has "
                f"{run.budget.deadline_s:g} s: ask for a longer budget.deadline_s, within the "
                f"server's limit of {caps.deadline_s:g} s, or run it as interactive"
            )
        idem_key = self.keys.idempotency(tenant, idempotency_key) if idempotency_key else None
        if idem_key is not None:
            existing = await self._reserve_idempotency(idem_key, run.id, body_digest(body))
            if existing is not None:
                await self._replicated(existing)
                return Submitted(existing, created=False)
        try:
            return await self._submit(tenant, body, run)
        except NotReplicated:
            raise  # the run exists: the same key must find it
        except PodcrewError:
            if idem_key is not None:  # nothing was accepted: the same key may be retried
                await self.redis.delete(idem_key)
            raise

    async def _replicated(self, run: Run) -> None:
        """Answer with an existing run only once the replicas hold it (its own creation may
        have timed out waiting for them)."""
        try:
            await self.store.replicated(run.id)
        except ReplicationTimeout as exc:
            raise _not_replicated(run, f"it is not yet on enough replicas ({exc}); retry") from exc

    async def _check_callback(self, url: str) -> None:
        """Refuse now (`400 blocked-url`) a callback the delivery's egress guard would refuse:
        a malformed URL, a host off the allow-list, or one that resolves to a loopback,
        private, link-local or metadata address. A name that does not resolve yet is
        accepted: the guard checks again, and pins the address, at delivery."""
        if self.callbacks is None:
            raise WebhooksNotConfigured(
                "this installation sends no webhooks: PODCREW_WEBHOOK_SECRET is not set"
            )
        with contextlib.suppress(UnresolvableHost):
            await self.callbacks.check(url)

    async def _reserve_idempotency(self, key: str, run_id: str, digest: str) -> Run | None:
        """None when the key is new (now reserved for `run_id`); else the run it names."""
        value = orjson.dumps({"run_id": run_id, "digest": digest}).decode()
        if await self.redis.set(key, value, nx=True, ex=self.settings.idempotency_ttl_s):
            return None
        raw = await self.redis.get(key)
        if raw is None:  # expired between the two calls: reserve again
            return await self._reserve_idempotency(key, run_id, digest)
        held = orjson.loads(raw)
        if held["digest"] != digest:
            raise Conflict(
                "this Idempotency-Key was used with a different request body",
                run_id=held["run_id"],
            )
        existing = await self.store.get(held["run_id"])
        if existing is None:
            raise Conflict("this Idempotency-Key names a run that is being created; retry")
        return existing

    async def _submit(self, tenant: str, body: RunCreate, run: Run) -> Submitted:
        digest = run_digest(run)
        coalesce_key = self.keys.coalesce(tenant, digest)
        if self.settings.coalesce and body.callback_url is None:
            joined = await self._join(coalesce_key, run)
            if joined is not None:
                await self._replicated(joined)
                RUNS_COALESCED.inc()
                return Submitted(joined, created=False)
        if self.settings.result_cache_ttl_s and body.thread_id is None:
            cached = await self.redis.get(self.keys.result_cache(digest))
            CACHE_REQUESTS.labels("result", "hit" if cached else "miss").inc()
            if cached:
                result = RunResult.model_validate_json(str(cached))
                answered = await self._answer_from_cache(run, result, CacheMark(kind="result"))
                return Submitted(answered, created=True)
        vector = None
        if self.semantic is not None and body.thread_id is None:
            vector = await self.semantic.embed(run.question)
            hit = await self.semantic.lookup(run, vector)
            CACHE_REQUESTS.labels("semantic", "hit" if hit else "miss").inc()
            if hit is not None and hit.run.result is not None:
                mark = CacheMark(kind="semantic", similarity=hit.similarity, source_run=hit.run.id)
                answered = await self._answer_from_cache(run, hit.run.result, mark)
                return Submitted(answered, created=True)
        limits = self.settings.limits_for(tenant)
        await self.limiter.admit(tenant, run.id, limits, max_age_s=self._longest_life_s(run))
        try:
            await self.store.create(run)
        except ReplicationTimeout as exc:
            # Written, but not known to survive a failover: not accepted. The run keeps its
            # place and its Idempotency-Key, since it may well execute; a retry with the key
            # answers with it.
            raise _not_replicated(
                run,
                f"it was stored on the primary, but {exc}: it is not accepted, though it may "
                "still execute. Retry with the same Idempotency-Key",
            ) from exc
        except BaseException:
            await self.limiter.release_run(tenant, run.id)
            raise
        if self.semantic is not None and vector is not None:
            await self.semantic.remember(tenant, run.id, vector)
        return Submitted(run, created=True)

    def _longest_life_s(self, run: Run) -> float:
        """How long `run` can still be unfinished: its deadline on each of its deliveries
        (a batch run's is hours, an interactive run's minutes)."""
        return run.budget.deadline_s * self.settings.max_deliveries

    async def _join(self, key: str, run: Run) -> Run | None:
        """The unfinished identical run to join, or None after claiming the key for `run`."""
        ttl = int(self._longest_life_s(run)) + 60
        for _ in range(3):
            if await self.redis.set(key, run.id, nx=True, ex=ttl):
                return None
            other_id = await self.redis.get(key)
            other = await self.store.get(str(other_id)) if other_id else None
            if other is not None and not other.status.terminal:
                return other
            # The holder finished (or vanished): take the key over and run anew.
            await self.redis.delete(key)
        return None

    async def _answer_from_cache(self, run: Run, result: RunResult, mark: CacheMark) -> Run:
        """Finish `run` at once with a cached `result`, announced (events, webhook) as any
        finished run through `create_finished`."""
        now = datetime.now(UTC)
        run.result = result
        run.status = RunStatus.SUCCEEDED
        run.cached = True
        run.cache = mark
        run.started_at = run.finished_at = now
        hit = {"cache": mark.kind} | mark.model_dump(exclude={"kind"}, exclude_none=True)
        await self.store.create_finished(
            run,
            [
                (EventType.CACHE_HIT, hit),
                (EventType.RUN_SUCCEEDED, {"cached": True, "usage": run.usage.model_dump()}),
            ],
        )
        log.info("run_answered_from_cache", run_id=run.id, cache=mark.kind)
        log_run_audit(run)  # the run ends here: no worker will see it
        return run
