"""Worker mode: consume the run queue and execute each run's pipeline.

Three jobs, three parts: the queue consumer (`consumer.QueueConsumer`: the delivery
lifecycle), the run executor (`executor.RunExecutor`: one run, from its entry to its stored
final state), and what happens after a run ends (`aftermath`: result cache and thread
memory, finished-run metrics, the audit line). `create_worker` puts them together; the
lists below are the one place an after-finish part is added. Completion webhooks are the
webhook outbox's (`podcrew_orchestrator.outbox`), owed by the final transition itself.
"""

from __future__ import annotations

from podcrew_core.llm import LLMSettings
from podcrew_core.runtime.ledger import Ledger
from podcrew_core.runtime.redis import RedisClient, is_cluster
from podcrew_orchestrator.aftermath import (
    AfterFinish,
    Aftermath,
    FinishedRunMetrics,
    RunMemory,
    audit,
)
from podcrew_orchestrator.cancellation import CancelWatch
from podcrew_orchestrator.consumer import IntakeGate, QueueConsumer
from podcrew_orchestrator.executor import RunExecutor
from podcrew_orchestrator.keys import keys_for
from podcrew_orchestrator.pipeline import Pipeline
from podcrew_orchestrator.queue import RunQueue
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore
from podcrew_orchestrator.submit import budget_caps


def create_worker(
    settings: OrchestratorSettings,
    redis: RedisClient,
    pipeline: Pipeline,
    llm: LLMSettings,
) -> QueueConsumer:
    """A worker on `redis`: the queue consumer, handing each run to an executor whose runs
    end with the after-finish parts."""
    keys = keys_for(settings.key_prefix, settings.queue_partitions, cluster=is_cluster(redis))
    store = RunStore(redis, keys, settings.run_ttl_s, budget_caps=budget_caps(settings))
    queue = RunQueue(redis, keys, settings.consumer_name)
    # Order matters where a part may fail: the memory's Redis writes come first, so a run
    # whose result was not remembered is not counted or audited as finished either.
    parts: list[AfterFinish] = [RunMemory(store, settings), FinishedRunMetrics(settings), audit]
    watch = CancelWatch(store)
    executor = RunExecutor(
        settings,
        store,
        queue,
        pipeline,
        llm,
        Ledger(redis, settings.key_prefix),
        Aftermath(parts),
        watch,
    )
    gate = IntakeGate(pipeline.unreachable_agents)
    return QueueConsumer(settings, store, queue, executor, watch, gate)
