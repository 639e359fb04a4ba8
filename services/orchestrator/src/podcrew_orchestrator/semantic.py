"""The semantic cache: a question close in meaning to one the same tenant asked recently is
answered with that run's result.

Off by default (`PODCREW_ORCHESTRATOR_SEMANTIC_CACHE`); never for thread runs, whose answer
depends on the turns before. Questions are embedded by the wordllama model that ships in
the podcrew-kb package (`podcrew_kb.embed`, the orchestrator's `semantic-cache` extra), loaded
on the first lookup, so an api that leaves the cache off never loads it. Each tenant's recent
questions live in one Redis list, newest first, at most `semantic_cache_entries` (default
200): a lookup reads them all and scores them by brute-force cosine similarity (200 by 256
dimensions is well under a millisecond), which needs no vector index. An entry names the run
its question started; only a run that succeeded with a fully researched result answers, so
the entry of a run still going or failed is passed over. Entries older than the cache's
lifetime (`semantic_cache_ttl_s`, else the result cache's) are ignored and trimmed.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from redis.asyncio import Redis

from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.schemas import Run, RunStatus
from podcrew_orchestrator.keys import Keys
from podcrew_orchestrator.settings import OrchestratorSettings
from podcrew_orchestrator.store import RunStore

if TYPE_CHECKING:
    from podcrew_kb.embed import Embedder, Vectors

# numpy and the model come with the semantic-cache extra: imported where used, so an api with
# the cache off (and without the extra) runs as before.


class SemanticCacheUnavailable(PodcrewError):
    """The semantic cache is on but its model is not installed."""

    status = 500
    slug = "misconfigured"
    title = "Semantic cache unavailable"
    retryable = False


@dataclass(frozen=True, slots=True)
class SemanticHit:
    run: Run  # the earlier run whose result answers
    similarity: float


class SemanticCache:
    """Per-tenant recent questions and their runs, looked up by meaning."""

    def __init__(
        self, redis: Redis, keys: Keys, store: RunStore, settings: OrchestratorSettings
    ) -> None:
        if importlib.util.find_spec("podcrew_kb") is None:
            raise SemanticCacheUnavailable(
                "PODCREW_ORCHESTRATOR_SEMANTIC_CACHE is on, but podcrew-kb (the embedding "
                "model) is not installed: install podcrew-orchestrator[semantic-cache]"
            )
        self.redis = redis
        self.keys = keys
        self.store = store
        self.threshold = settings.semantic_cache_threshold
        self.entries = settings.semantic_cache_entries
        self.ttl_s = settings.semantic_cache_ttl_s or settings.result_cache_ttl_s
        self._embedder: Embedder | None = None
        self._loading = asyncio.Lock()

    async def embed(self, question: str) -> Vectors:
        """The question's unit vector (the model is loaded on first use, off the loop)."""
        async with self._loading:
            if self._embedder is None:
                from podcrew_kb.embed import load_embedder

                self._embedder = await asyncio.to_thread(load_embedder)
        vectors: Vectors = self._embedder.embed([question])
        return vectors[0:1].reshape(-1)

    async def lookup(self, run: Run, vector: Vectors) -> SemanticHit | None:
        """The closest earlier run of the same tenant and shape (tier, sub-questions) at or
        above the threshold that can answer `run`."""
        raw = await self.redis.lrange(self.keys.semantic_cache(run.tenant), 0, self.entries - 1)
        oldest = time.time() - self.ttl_s
        entries = [e for e in (orjson.loads(r) for r in raw) if e["at"] >= oldest]
        if not entries:
            return None
        import numpy as np

        matrix = np.stack(
            [np.frombuffer(base64.b64decode(e["v"]), dtype=np.float16) for e in entries]
        ).astype(np.float32)
        scores = matrix @ vector
        for index in np.argsort(-scores):
            if scores[index] < self.threshold:
                break
            source = await self.store.get(entries[index]["run"])
            if source is not None and _answers(source, run):
                return SemanticHit(source, round(float(scores[index]), 4))
        return None

    async def remember(self, tenant: str, run_id: str, vector: Vectors) -> None:
        """Note the question of a run that will execute, newest first, within the bound."""
        import numpy as np

        entry = {
            "run": run_id,
            "at": time.time(),
            "v": base64.b64encode(vector.astype(np.float16).tobytes()).decode(),
        }
        key = self.keys.semantic_cache(tenant)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.lpush(key, orjson.dumps(entry).decode())
            pipe.ltrim(key, 0, self.entries - 1)
            pipe.expire(key, self.ttl_s)
            await pipe.execute()


def _answers(source: Run, run: Run) -> bool:
    """Whether `source` may answer `run`: the same tenant and shape, finished well,
    researched in full, and not itself a cached answer."""
    return (
        source.tenant == run.tenant
        and source.tier == run.tier
        and source.max_subquestions == run.max_subquestions
        and source.status == RunStatus.SUCCEEDED
        and source.result is not None
        and not source.result.unresearched
        and not source.cached
    )
