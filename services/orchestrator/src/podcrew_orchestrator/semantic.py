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

Similarity alone is not enough: the model averages word vectors, so "How does the with
statement work?" and "How does the for statement work?" score 0.98 while most rewordings
score about 0.8. A false hit serves the report of another question, which is worse than a
miss, so an entry answers only when the two questions also pass a lexical guard
(`same_subject`): no content word of one is swapped for another in the other, and a question
that names a direction keeps its words' order. bench/semcache.py measures both together.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.schemas import Run, RunStatus
from podcrew_core.runtime.redis import RedisClient
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
        self, redis: RedisClient, keys: Keys, store: RunStore, settings: OrchestratorSettings
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
            if (
                source is not None
                and _answers(source, run)
                and same_subject(source.question, run.question)
            ):
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


# The words that frame a question rather than say what it is about.
_FRAME_WORDS = """
a an the how what which who whom why when where do does did doing done is are was were be been
being i me my we our you your it its they them their this that these those can could should
would will shall may might must there here about between of to on at by in into as from and use
used using way ways work works working get gets give gives purpose mean means
"""
_FRAME = frozenset(_FRAME_WORDS.split())
# Words that give the question a direction: with one of them, the order of the words matters
# ("convert a string to an integer" is not "convert an integer to a string").
_DIRECTION = frozenset(("to", "into", "from", "than", "before", "after", "over", "vs", "versus"))
_SUFFIXES = (
    *("ations", "ation", "ances", "ance", "ences", "ence", "ents", "ent", "ings", "ing"),
    *("ies", "ied", "ed", "es", "s", "ly"),
)
# A word only one of two questions has that turns it into another question however much else
# they share: a negation, or a number (a version, a count).
_NEGATIONS = frozenset(("not", "no", "never", "without", "nor", "none"))
_TOKEN = re.compile(r"[a-z0-9_]+|[=!<>]=|\*\*|//")


def _stem(word: str) -> str:
    """A light stem, so "handle" and "handling", "class" and "classes" are one word."""
    for suffix in _SUFFIXES:
        shortest = 3 if suffix in ("s", "es") else 4
        if word.endswith(suffix) and len(word) - len(suffix) >= shortest and word[-2:] != "ss":
            word = word[: -len(suffix)] + ("y" if suffix in ("ies", "ied") else "")
            break
    if len(word) > 4 and word[-1] == word[-2] and word[-1] not in "sl":
        word = word[:-1]  # formatted -> formatt -> format
    if len(word) > 4 and word.endswith("e"):
        word = word[:-1]  # handle -> handl, as handling
    return word


def content_words(question: str) -> list[str]:
    """The stemmed words of `question` that say what it is about, in order (numbers,
    operators, negations and keywords such as "with" or "for" included)."""
    tokens = _TOKEN.findall(question.lower().replace("n't", " not").replace("'s", ""))
    return [_stem(token) for token in tokens if token not in _FRAME]


def _decisive(word: str) -> bool:
    return word in _NEGATIONS or any(c.isdigit() for c in word)


def same_subject(first: str, second: str) -> bool:
    """Whether two questions close in meaning may share an answer: they share a content word,
    neither swaps one of the other's content words for its own (one may add words: "in
    Python", "function") unless it is a negation or a number, and when one names a direction
    their shared words keep one order."""
    a, b = content_words(first), content_words(second)
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    if (only_a and only_b) or not set(a) & set(b) or any(map(_decisive, only_a | only_b)):
        return False
    directed = _DIRECTION & set(_TOKEN.findall(f"{first} {second}".lower()))
    if not directed:
        return True
    shared = set(a) & set(b)
    return [w for w in dict.fromkeys(a) if w in shared] == [
        w for w in dict.fromkeys(b) if w in shared
    ]
