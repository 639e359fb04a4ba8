"""Typed dependencies on the container a lifespan provides (podcrew_core.runtime.deps)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from podcrew_core.runtime.deps import part, provide


@dataclass(frozen=True)
class Resources:
    greeting: str
    count: int


Greeting = Annotated[str, part(Resources, lambda r: r.greeting)]
Count = Annotated[int, part(Resources, lambda r: r.count)]


def _app(resources: object) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        provide(app, resources)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/")
    async def hello(greeting: Greeting, count: Count) -> dict[str, str | int]:
        return {"greeting": greeting, "count": count}

    return app


def test_routes_get_the_parts_of_what_the_lifespan_provided() -> None:
    with TestClient(_app(Resources("hello", 3))) as client:
        assert client.get("/").json() == {"greeting": "hello", "count": 3}
    # The parts are dependencies, not request parameters: none shows in the API.
    assert _app(Resources("x", 0)).openapi()["paths"]["/"]["get"].get("parameters") is None


def test_a_lifespan_that_provided_something_else_is_an_error_not_a_wrong_answer() -> None:
    with (
        TestClient(_app({"greeting": "hello"})) as client,
        pytest.raises(TypeError, match="provides dict, not Resources"),
    ):
        client.get("/")
