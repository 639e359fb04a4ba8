"""Fixtures for the research agent's unit tests: no network, the offline model, the shipped
knowledge base."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from podcrew_core.llm.offline import OfflineProvider
from podcrew_core.llm.types import LLMRequest, LLMResponse
from podcrew_kb.embed import Embedder, load_embedder
from podcrew_research.settings import DEFAULT_CORPUS_DIR
from podcrew_research.tools.kb_search import KnowledgeBase


class RecordingProvider(OfflineProvider):
    """The offline model, keeping every request it was sent."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.requests.append(request)
        return await super().complete(request)


@pytest.fixture(scope="session")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(scope="session")
def kb(embedder: Embedder) -> KnowledgeBase:
    return KnowledgeBase.load(DEFAULT_CORPUS_DIR, embedder=embedder)


@pytest.fixture
def recording_provider() -> RecordingProvider:
    return RecordingProvider()


Resolver = Callable[[str, int], Awaitable[list[str]]]


def _static_resolver(table: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        try:
            return table[host]
        except KeyError:
            raise OSError(f"no such host {host}") from None

    return resolve


@pytest.fixture
def static_resolver() -> Callable[[dict[str, list[str]]], Resolver]:
    """Builds a resolver answering from a table; other names fail as NXDOMAIN would."""
    return _static_resolver
