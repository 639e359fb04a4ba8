"""The internal HTTP client: httpx's API over aiohttp, with httpx's timeouts, errors,
streaming, connection limit and tracing, and `post_json`'s meaning of each failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import BaseModel

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import (
    BadRequest,
    BudgetExceeded,
    CircuitOpen,
    DeadlineExceeded,
    InvalidModelOutput,
    LLMOverloaded,
    LLMRejected,
    NotReady,
    Overloaded,
    PodcrewError,
    RetryBudgetExhausted,
    StateStoreUnavailable,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)
from podcrew_core.contracts.hop import RUN_ID_HEADER, Hop, RetryBudget
from podcrew_core.contracts.problem import to_problem
from podcrew_core.runtime import tracing
from podcrew_core.runtime.http import Replicas, create_http_client, post_json, server_time_s
from podcrew_core.runtime.resilience import Unreachable, answer_error, unreachable

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Echo(BaseModel):
    seen: dict[str, str]


class Server:
    """An aiohttp server on a free loopback port, one handler per path."""

    def __init__(self) -> None:
        self.app = web.Application()
        self.runner: web.AppRunner | None = None
        self.url = ""
        self.in_flight = 0
        self.max_in_flight = 0
        self.release = asyncio.Event()

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.app.router.add_route(method, path, handler)

    async def start(self) -> None:
        self.runner = web.AppRunner(self.app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()

    async def echo(request: web.Request) -> web.Response:
        headers = {k.lower(): v for k, v in request.headers.items()}
        return web.json_response({"seen": {**headers, "body": await request.text()}})

    async def held(request: web.Request) -> web.Response:
        srv.in_flight += 1
        srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            await srv.release.wait()
        finally:
            srv.in_flight -= 1
        return web.json_response({"seen": {}})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1)
        return web.json_response({"seen": {}})

    async def hang_up(request: web.Request) -> web.Response:
        assert request.transport is not None
        request.transport.close()  # the peer goes away without answering
        await asyncio.sleep(0.1)
        return web.json_response({"seen": {}})

    async def events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"event: delta\ndata: one\n\n")
        await srv.release.wait()  # the client must see the first event before this returns
        await response.write(b"event: done\ndata: two\n\n")
        await response.write_eof()
        return response

    srv.route("POST", "/echo", echo)
    srv.route("GET", "/held", held)
    srv.route("POST", "/slow", slow)
    srv.route("POST", "/hang-up", hang_up)
    srv.route("POST", "/events", events)
    await srv.start()
    yield srv
    srv.release.set()
    await srv.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    http = create_http_client(max_connections=2, headers={"authorization": "Bearer t0ken"})
    yield http
    await http.aclose()


async def _post(
    client: httpx.AsyncClient, url: str, deadline_s: float = 5.0, **kwargs: Any
) -> Echo:
    return await post_json(
        client,
        url,
        Echo(seen={"k": "v"}),
        Echo,
        target="test-agent",
        hop=Hop("run-1", Deadline.after(deadline_s), RetryBudget(2)),
        **kwargs,
    )


async def test_post_json_sends_the_body_and_the_client_and_hop_headers(
    server: Server, client: httpx.AsyncClient
) -> None:
    echoed = await _post(client, f"{server.url}/echo")
    assert echoed.seen["body"] == '{"seen":{"k":"v"}}'
    assert echoed.seen["authorization"] == "Bearer t0ken"
    assert echoed.seen[RUN_ID_HEADER] == "run-1"
    assert echoed.seen["x-podcrew-retry-budget"] == "2"
    assert 4000 < int(echoed.seen["x-podcrew-deadline-ms"]) <= 5000
    assert echoed.seen["content-type"] == "application/json"


async def test_a_refused_connection_is_unreachable_not_a_timeout(
    client: httpx.AsyncClient,
) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get("http://127.0.0.1:9/nothing-listens")
    with pytest.raises(UpstreamError, match="unreachable: ConnectError") as caught:
        await _post(client, "http://127.0.0.1:9/research")
    assert not isinstance(caught.value, UpstreamTimeout)


async def test_a_peer_that_hangs_up_is_a_protocol_error(
    server: Server, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post(f"{server.url}/hang-up", content=b"{}")


async def test_the_deadline_bounds_the_wait_for_an_answer(
    server: Server, client: httpx.AsyncClient
) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post(f"{server.url}/slow", content=b"{}", timeout=0.2)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await _post(client, f"{server.url}/slow", deadline_s=0.3)
    assert loop.time() - started < 0.9


async def test_a_stream_delivers_each_event_as_it_is_written(
    server: Server, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", f"{server.url}/events", content=b"{}") as response:
        assert response.headers["content-type"] == "text/event-stream"
        lines = response.aiter_lines()
        assert await asyncio.wait_for(anext(lines), 2) == "event: delta"
        assert await anext(lines) == "data: one"
        server.release.set()
        rest = [line async for line in lines]
    assert rest == ["", "event: done", "data: two", ""]


async def test_connections_never_exceed_the_limit(
    server: Server, client: httpx.AsyncClient
) -> None:
    calls = [asyncio.create_task(client.get(f"{server.url}/held")) for _ in range(5)]
    await asyncio.sleep(0.3)
    assert server.in_flight == 2  # the other three wait for a free connection
    server.release.set()
    responses = await asyncio.gather(*calls)
    assert [r.status_code for r in responses] == [200] * 5
    assert server.max_in_flight == 2


async def test_calls_carry_the_trace_context_when_tracing_is_on(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    parent = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    plain = create_http_client()  # tracing off
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    assert tracing.tracing_enabled()
    traced = create_http_client()
    try:
        with trace.use_span(NonRecordingSpan(parent)):
            untraced_seen = (await plain.post(f"{server.url}/echo", json={})).json()["seen"]
            traced_seen = (await traced.post(f"{server.url}/echo", json={})).json()["seen"]
    finally:
        HTTPXClientInstrumentor.uninstrument_client(traced)
        await plain.aclose()
        await traced.aclose()
    assert "traceparent" not in untraced_seen
    assert traced_seen["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


async def test_a_service_says_how_long_its_app_took_and_the_caller_records_the_hop() -> None:
    """The service app's `Server-Timing` reaches the caller, which records the hop's own
    cost (its time minus the app's) per target."""
    from contextlib import asynccontextmanager

    from prometheus_client import REGISTRY

    from podcrew_core.runtime.app import create_service_app

    @asynccontextmanager
    async def lifespan(_: object) -> AsyncIterator[None]:
        yield

    app = create_service_app(title="t", version="0", lifespan=lifespan)

    @app.post("/echo")
    async def echo() -> dict[str, dict[str, str]]:
        await asyncio.sleep(0.2)
        return {"seen": {}}

    def hops() -> float:
        labels = {"target": "timed"}
        return (
            REGISTRY.get_sample_value("podcrew_http_client_hop_overhead_seconds_count", labels)
            or 0.0
        )

    def hop_sum() -> float:
        labels = {"target": "timed"}
        return (
            REGISTRY.get_sample_value("podcrew_http_client_hop_overhead_seconds_sum", labels) or 0.0
        )

    before, before_sum = hops(), hop_sum()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        raw = await client.post("/echo")
        app_s = server_time_s(raw)
        assert app_s is not None and app_s >= 0.2  # the handler's sleep is inside it
        await post_json(
            client,
            "/echo",
            Echo(seen={}),
            Echo,
            target="timed",
            hop=Hop("run_1", Deadline.after(5), RetryBudget(0)),
        )
    assert hops() == before + 1
    assert 0 <= hop_sum() - before_sum < 0.2  # the hop's cost excludes the app's 200 ms


def test_server_timing_is_read_by_name_and_unreadable_values_are_ignored() -> None:
    def timing(value: str) -> float | None:
        return server_time_s(httpx.Response(200, headers={"server-timing": value}))

    assert timing("db;dur=3, app;dur=12.5") == 0.0125
    assert timing('app;desc="x";dur=1') == 0.001
    assert timing("app;dur=soon") is None
    assert timing("cache;dur=1") is None
    assert server_time_s(httpx.Response(200)) is None


# --- what post_json retries: the one policy, within the hop's retry budget -----------------


class Agent:
    """An agent behind an in-memory transport answering each request with the next of
    `answers` (the last one repeats), counting requests and the retry budget each carried."""

    def __init__(self, *answers: httpx.Response | type[httpx.TransportError]) -> None:
        self.answers = list(answers)
        self.budgets: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.budgets.append(request.headers["x-podcrew-retry-budget"])
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("refused", request=request)

    @property
    def requests(self) -> int:
        return len(self.budgets)


def problem(error: PodcrewError, **extra: Any) -> httpx.Response:
    body = to_problem(error) | extra
    return httpx.Response(error.status, json=body, headers=error.headers)


async def _call(agent: Agent, retries: int = 2, deadline_s: float = 5.0) -> tuple[Echo, Hop]:
    hop = Hop("run-1", Deadline.after(deadline_s), RetryBudget(retries))
    async with httpx.AsyncClient(transport=httpx.MockTransport(agent)) as http:
        echoed = await post_json(
            http, "http://agent/v1/research", Echo(seen={}), Echo, target="agent", hop=hop
        )
    return echoed, hop


ECHO = httpx.Response(200, json={"seen": {}})


@pytest.mark.parametrize(
    "error",
    [
        LLMRejected("the provider refused the request", upstream_status=400),
        InvalidModelOutput("submit_findings output failed validation: 1 error(s)"),
        BudgetExceeded("the run used 120 of its 100 tokens", budget="run_tokens"),
        DeadlineExceeded("research needs at least 0.05s but only 0.01s remain"),
        BadRequest("x-podcrew-retry-budget must be a non-negative integer"),
        ValidationFailed("sub_question: Field required"),
        UpstreamTimeout("the LLM did not answer before the deadline"),
        CircuitOpen("llm-anthropic failed repeatedly"),
        RetryBudgetExhausted("the run's retry budget is spent"),
    ],
    ids=lambda e: e.slug,
)
async def test_a_problem_that_cannot_pass_is_never_retried(error: PodcrewError) -> None:
    agent = Agent(problem(error))
    with pytest.raises(type(error)) as failed:
        await _call(agent)
    assert agent.requests == 1
    assert failed.value.detail == error.detail and failed.value.slug == error.slug
    assert failed.value.extra == error.extra


@pytest.mark.parametrize(
    "answer",
    [
        problem(Overloaded("no research-agent slot freed up within 1.00s")),
        problem(LLMOverloaded("Overloaded", upstream_status=529)),
        problem(StateStoreUnavailable("the state store is unavailable for a moment")),
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.ConnectError,
    ],
    ids=["overloaded", "llm-overloaded", "state-store", "proxy-502", "refused"],
)
async def test_what_can_pass_is_retried_within_the_hops_retry_budget(
    answer: httpx.Response | type[httpx.TransportError],
) -> None:
    agent = Agent(answer, answer, ECHO)
    _, hop = await _call(agent, retries=2)
    assert agent.budgets == ["2", "1", "0"]  # each retry taken from the budget, and said so
    assert (hop.retries.remaining, hop.retries.spent) == (0, 2)

    agent = Agent(answer, ECHO)
    with pytest.raises(PodcrewError):
        await _call(agent, retries=0)
    assert agent.requests == 1  # a budget of 0 means no retry


async def test_attempts_are_bounded_whatever_the_budget() -> None:
    agent = Agent(problem(LLMOverloaded("busy")))
    with pytest.raises(LLMOverloaded):
        await _call(agent, retries=10)
    assert agent.requests == 3


async def test_retries_the_agent_reports_spending_come_off_the_hops_budget() -> None:
    agent = Agent(problem(LLMOverloaded("busy"), retries=2), ECHO)
    _, hop = await _call(agent, retries=4)
    assert agent.budgets == ["4", "1"]  # 2 by the agent, 1 for the retry itself
    assert (hop.retries.remaining, hop.retries.spent) == (1, 3)


async def test_a_retry_waits_what_the_agent_asks_if_the_deadline_allows() -> None:
    busy = problem(Overloaded("full", headers={"Retry-After": "1"}))
    agent = Agent(busy, ECHO)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await _call(agent, deadline_s=5.0)
    assert agent.requests == 2 and loop.time() - started >= 1.0

    agent = Agent(busy, ECHO)
    with pytest.raises(Overloaded):
        await _call(agent, deadline_s=0.5)  # no time to wait a second and call again
    assert agent.requests == 1


# --- replicas: a retry after a replica could not be reached goes to another -----------------


class Replica:
    """Replicas behind one in-memory transport, by host: each answers with its own `answer`
    (a response, or a transport error it raises), counting the requests it got."""

    def __init__(self, **answers: httpx.Response | type[httpx.TransportError]) -> None:
        self.answers = answers
        self.seen: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.seen.append(host)
        answer = self.answers[host]
        if isinstance(answer, httpx.Response):
            return answer
        raise answer("gone", request=request)


async def _to_replicas(
    backends: Replica, replicas: Replicas, *, retries: int = 2, idempotent: bool = True
) -> Echo:
    hop = Hop("run-1", Deadline.after(5.0), RetryBudget(retries))
    async with httpx.AsyncClient(transport=httpx.MockTransport(backends)) as http:
        return await post_json(
            http, replicas, Echo(seen={}), Echo, target="agent", hop=hop, idempotent=idempotent
        )


@pytest.mark.parametrize(
    "gone",
    [
        httpx.ConnectError,
        httpx.ReadError,  # reset mid-answer: retried because the call is idempotent
        httpx.RemoteProtocolError,
        httpx.Response(502, text="<html>502 Bad Gateway</html>"),
        httpx.Response(503, text="no healthy upstream"),
        problem(NotReady("the service is shutting down")),
    ],
    ids=["refused", "reset", "closed", "proxy-502", "proxy-503", "draining"],
)
async def test_a_call_that_cannot_reach_a_replica_is_retried_on_another(
    gone: httpx.Response | type[httpx.TransportError],
) -> None:
    backends = Replica(a=gone, b=ECHO)
    replicas = Replicas.parse("http://a, http://b/", "/v1/research")
    assert list(replicas.urls) == ["http://a/v1/research", "http://b/v1/research"]
    await _to_replicas(backends, replicas)
    assert backends.seen == ["a", "b"]
    # The replica that could not be reached rests: the next calls go to the other one.
    await _to_replicas(backends, replicas, retries=0)
    await _to_replicas(backends, replicas, retries=0)
    assert backends.seen == ["a", "b", "b", "b"]


async def test_a_reset_is_retried_only_for_an_idempotent_call() -> None:
    backends = Replica(a=httpx.ReadError, b=ECHO)
    with pytest.raises(UpstreamError) as failed:
        await _to_replicas(backends, Replicas.parse("http://a,http://b"), idempotent=False)
    assert backends.seen == ["a"] and unreachable(failed.value)


async def test_calls_take_turns_and_a_rested_replica_comes_back() -> None:
    now = [0.0]
    replicas = Replicas(["http://a", "http://b"], rest_s=5.0, clock=lambda: now[0])
    assert [replicas.pick() for _ in range(4)] == ["http://a", "http://b"] * 2
    replicas.failed("http://a", Unreachable("a unreachable: ConnectError"))
    replicas.failed("http://b", UpstreamError("b's LLM failed"))  # an answer: b is there
    assert [replicas.pick() for _ in range(3)] == ["http://b"] * 3
    now[0] = 5.0
    assert {replicas.pick() for _ in range(2)} == {"http://a", "http://b"}
    # Every replica resting: the one whose rest ends first is tried rather than none.
    replicas.failed("http://a", Unreachable("a unreachable"))
    now[0] = 6.0
    replicas.failed("http://b", Unreachable("b unreachable"))
    assert replicas.pick() == "http://a"


def test_unreachable_means_not_reached_not_a_failed_answer() -> None:
    assert unreachable(Unreachable("refused")) and unreachable(NotReady("draining"))
    assert unreachable(answer_error(503, b"<html>Service Unavailable</html>"))
    assert not unreachable(answer_error(502, orjson.dumps(to_problem(UpstreamError("llm")))))
    assert not unreachable(Overloaded("full")) and not unreachable(UpstreamTimeout("slow"))
    assert not unreachable(answer_error(500, b"oops"))
