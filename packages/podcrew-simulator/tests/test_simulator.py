"""The simulated Messages API, started for real on loopback and driven only through the
official `anthropic` SDK, the way podcrew's provider, load tests and staging clusters use it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
import uvicorn
from pydantic import BaseModel, Field

from podcrew_core.contracts.schemas import FindingsReport
from podcrew_core.llm import ToolSpec, output_tool
from podcrew_core.llm.tokens import estimate_tokens
from podcrew_simulator import SimulatorSettings, create_simulator_app

MODEL = "claude-haiku-4-5"
SUB_QUESTION = "What is a generator?"


class KbSearchInput(BaseModel):
    query: str = Field(min_length=1, max_length=500)
    k: int = Field(default=5, ge=1, le=10)


class FetchUrlInput(BaseModel):
    url: str = Field(min_length=1, json_schema_extra={"format": "uri"})


# Tools in the shape a research agent offers: a search, a page fetch, an output tool.
KB_SEARCH_TOOL, FETCH_URL_TOOL, FINDINGS_TOOL = "kb_search", "fetch_url", "submit_findings"
KB_SEARCH_SPEC = ToolSpec(
    name=KB_SEARCH_TOOL,
    description="Search the knowledge base.",
    input_schema=KbSearchInput.model_json_schema(),
)
FETCH_URL_SPEC = ToolSpec(
    name=FETCH_URL_TOOL,
    description="Read a web page.",
    input_schema=FetchUrlInput.model_json_schema(),
)
# Structured input, as a JSON document: what to research, and what to write up.
RESEARCH = {
    "role": "user",
    "content": json.dumps({"sub_question": SUB_QUESTION, "question": "How do generators work?"}),
}
REPORT_PAYLOAD = {
    "question": "How do generators work?",
    "sections": [
        {
            "sub_question": SUB_QUESTION,
            "findings": [
                {"claim": "A generator function returns an iterator that yields values.", "n": 1},
                {"claim": "Execution pauses at each yield until the next value is asked.", "n": 2},
            ],
        }
    ],
    "not_researched": [],
}
WRITE = {"role": "user", "content": json.dumps(REPORT_PAYLOAD)}
TOOLS = [KB_SEARCH_SPEC.model_dump(), FETCH_URL_SPEC.model_dump()]

StartSim = Callable[..., Awaitable[anthropic.AsyncAnthropic]]


class Launcher:
    """Runs simulators under uvicorn, configured as `run_simulator` serves them, each on a
    free loopback port in a thread of its own."""

    def __init__(self) -> None:
        self._running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(self, settings: SimulatorSettings) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound here, so no other process can take the port
        config = uvicorn.Config(
            create_simulator_app(settings),
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        self._running.append((server, thread, sock))
        deadline = time.monotonic() + 5
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the simulator did not start"
            time.sleep(0.005)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def stop_all(self) -> None:
        # All at once: each uvicorn takes a tick of its main loop to notice.
        for server, _, _ in self._running:
            server.should_exit = True
        for _, thread, sock in self._running:
            thread.join(5)
            sock.close()
            assert not thread.is_alive(), "a simulator did not stop"


@pytest.fixture(scope="module")
def launcher() -> Iterator[Launcher]:
    launcher = Launcher()
    yield launcher
    launcher.stop_all()


@pytest.fixture
async def start_sim(launcher: Launcher) -> AsyncIterator[StartSim]:
    """Starts a fresh simulator with the given settings; returns an SDK client for it."""
    clients: list[anthropic.AsyncAnthropic] = []

    async def start(
        *, max_retries: int = 0, client_timeout: float = 5.0, **settings: Any
    ) -> anthropic.AsyncAnthropic:
        base_url = await asyncio.to_thread(launcher.start, SimulatorSettings(**settings))
        client = anthropic.AsyncAnthropic(
            base_url=base_url, api_key="test-key", max_retries=max_retries, timeout=client_timeout
        )
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.fixture
async def sim(start_sim: StartSim) -> anthropic.AsyncAnthropic:
    return await start_sim()


async def sim_calls(client: anthropic.AsyncAnthropic) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = await client.get("/_sim/calls", cast_to=object)
    return calls


async def set_faults(client: anthropic.AsyncAnthropic, **changes: Any) -> dict[str, Any]:
    profile: dict[str, Any] = await client.put("/_sim/faults", cast_to=object, body=changes)
    return profile


# --- answers -----------------------------------------------------------------------------


async def test_plain_text_answer_is_the_writers_report(sim: anthropic.AsyncAnthropic) -> None:
    message = await sim.messages.create(
        model=MODEL,
        max_tokens=2048,
        system="You write cited reports.",
        messages=[WRITE],
        metadata={"user_id": "someone"},
        extra_body={"temperature": 0.2},  # keys the simulator has no use for are accepted
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.model == MODEL and message.id.startswith("msg_")
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    [block] = message.content
    assert block.type == "text"
    assert block.text.startswith("# How do generators work?")
    assert "returns an iterator that yields values. [1]" in block.text
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens == estimate_tokens(block.text)
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert message._request_id is not None and message._request_id.startswith("req_")


async def test_research_conversation_searches_then_submits_findings(
    sim: anthropic.AsyncAnthropic,
) -> None:
    findings_tool = output_tool(FINDINGS_TOOL, "Submit the findings.", FindingsReport)
    tools = [KB_SEARCH_SPEC.model_dump(), findings_tool.model_dump()]
    first = await sim.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=[RESEARCH],
        tools=tools,
    )
    assert first.stop_reason == "tool_use"
    text, call = first.content
    assert text.type == "text"
    assert call.type == "tool_use" and call.name == KB_SEARCH_TOOL
    assert call.input == {"query": SUB_QUESTION, "k": 5}

    hits = {
        "hits": [
            {
                "source": {"id": "kb:a#1", "title": "A"},
                "text": "A generator yields its values lazily.",
            },
            {
                "source": {"id": "kb:b#1", "title": "B"},
                "text": "Generators are lazy iterators in Python.",
            },
        ]
    }
    result = {
        "type": "tool_result",
        "tool_use_id": call.id,
        "content": [{"type": "text", "text": json.dumps(hits)}],
    }
    second = await sim.messages.create(
        model=MODEL,
        max_tokens=1024,
        tools=tools,
        messages=[
            RESEARCH,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in first.content],
            },
            {"role": "user", "content": [result]},
        ],
    )
    assert second.stop_reason == "tool_use"
    [submit] = second.content
    assert submit.type == "tool_use" and submit.name == FINDINGS_TOOL
    report = FindingsReport.model_validate(submit.input)
    assert [f.source.id for f in report.findings] == ["kb:a#1", "kb:b#1"]


@pytest.mark.parametrize(
    ("tool", "schema"), [(KB_SEARCH_TOOL, KbSearchInput), (FETCH_URL_TOOL, FetchUrlInput)]
)
async def test_forced_tool_choice_returns_that_tool_only(
    sim: anthropic.AsyncAnthropic, tool: str, schema: type[KbSearchInput | FetchUrlInput]
) -> None:
    message = await sim.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=[RESEARCH],
        tools=TOOLS,
        tool_choice={"type": "tool", "name": tool},
    )
    assert message.stop_reason == "tool_use"
    [call] = message.content
    assert call.type == "tool_use" and call.name == tool
    schema.model_validate(call.input)  # even a tool the model has no answer for gets valid input


async def test_tool_choice_none_answers_in_text(sim: anthropic.AsyncAnthropic) -> None:
    message = await sim.messages.create(
        model=MODEL,
        max_tokens=1024,
        messages=[RESEARCH],
        tools=TOOLS,
        tool_choice={"type": "none"},
    )
    assert message.stop_reason == "end_turn"
    assert [b.type for b in message.content] == ["text"]


async def test_output_stops_at_max_tokens(sim: anthropic.AsyncAnthropic) -> None:
    full = await sim.messages.create(model=MODEL, max_tokens=4096, messages=[WRITE])
    cut = await sim.messages.create(model=MODEL, max_tokens=8, messages=[WRITE])
    assert cut.stop_reason == "max_tokens"
    assert cut.usage.output_tokens <= 8 < full.usage.output_tokens
    assert cut.content[0].type == "text" and full.content[0].type == "text"
    assert full.content[0].text.startswith(cut.content[0].text)


# --- streaming ----------------------------------------------------------------------------


async def test_streamed_text_arrives_as_ordered_deltas_of_the_final_message(
    sim: anthropic.AsyncAnthropic,
) -> None:
    async with sim.messages.stream(model=MODEL, max_tokens=2048, messages=[WRITE]) as stream:
        deltas = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    plain = await sim.messages.create(model=MODEL, max_tokens=2048, messages=[WRITE])

    assert len(deltas) > 3
    [block] = final.content
    assert block.type == "text" and block.text == "".join(deltas)
    assert plain.content[0].type == "text" and block.text == plain.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens


async def test_stream_wire_format_is_the_apis_event_sequence(sim: anthropic.AsyncAnthropic) -> None:
    async with sim.messages.with_streaming_response.create(
        model=MODEL,
        max_tokens=1024,
        messages=[RESEARCH],
        tools=TOOLS,
        stream=True,
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["request-id"].startswith("req_")
        lines = [line async for line in response.iter_lines()]

    events = []
    for name, data in itertools.pairwise(lines):
        if name.startswith("event: "):
            event = json.loads(data.removeprefix("data: "))
            assert event["type"] == name.removeprefix("event: ")
            events.append(event)
    kinds = [kind for kind, _ in itertools.groupby(e["type"] for e in events)]
    block = ["content_block_start", "content_block_delta", "content_block_stop"]
    assert kinds == ["message_start", "ping", *block, *block, "message_delta", "message_stop"]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] > 0
    tool_start = next(e for e in events if e["type"] == "content_block_start" and e["index"] == 1)
    assert tool_start["content_block"]["input"] == {}
    delta = events[-2]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["output_tokens"] > 1


async def test_streamed_tool_input_is_reassembled_by_the_sdk(sim: anthropic.AsyncAnthropic) -> None:
    async with sim.messages.stream(
        model=MODEL,
        max_tokens=1024,
        messages=[RESEARCH],
        tools=TOOLS,
    ) as stream:
        pieces = [event.partial_json async for event in stream if event.type == "input_json"]
        final = await stream.get_final_message()
    assert len(pieces) > 1
    assert final.stop_reason == "tool_use"
    text, call = final.content
    assert text.type == "text" and text.text == "Calling kb_search."
    assert call.type == "tool_use" and call.name == KB_SEARCH_TOOL
    assert call.input == {"query": SUB_QUESTION, "k": 5}
    assert json.loads("".join(pieces)) == call.input


async def test_latency_and_time_to_first_token(start_sim: StartSim) -> None:
    sim = await start_sim(latency_s=0.2, ttft_s=0.15, stream_chunk_delay_s=0.01)
    started = time.perf_counter()
    await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    assert time.perf_counter() - started >= 0.2

    started = time.perf_counter()
    arrivals = []
    async with sim.messages.stream(model=MODEL, max_tokens=2048, messages=[WRITE]) as stream:
        async for _ in stream.text_stream:
            arrivals.append(time.perf_counter() - started)
    assert arrivals[0] >= 0.15
    assert arrivals[-1] - arrivals[0] >= 0.01 * (len(arrivals) - 1) * 0.9


# --- prompt caching -----------------------------------------------------------------------


async def test_prompt_cache_is_created_then_read(sim: anthropic.AsyncAnthropic) -> None:
    ephemeral = {"type": "ephemeral"}
    system = [
        {"type": "text", "text": "You research one sub-question. " * 40, "cache_control": ephemeral}
    ]
    tools = [KB_SEARCH_SPEC.model_dump() | {"cache_control": ephemeral}]
    request: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 1024,
        "system": system,
        "tools": tools,
        "messages": [RESEARCH],
    }
    first = await sim.messages.create(**request)
    second = await sim.messages.create(**request)
    async with sim.messages.stream(**request) as stream:
        streamed = await stream.get_final_message()

    cached = first.usage.cache_creation_input_tokens
    assert cached is not None and cached > 0 and first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == cached
    assert second.usage.input_tokens == first.usage.input_tokens > 0
    assert streamed.usage.cache_read_input_tokens == cached

    # Another system prompt after the same tools: the tools' prefix is read, the rest written.
    system[0] = system[0] | {"text": "You write the report. " * 40}
    changed = await sim.messages.create(**request)
    tools_only = changed.usage.cache_read_input_tokens
    assert tools_only is not None and 0 < tools_only < cached
    assert changed.usage.cache_creation_input_tokens == estimate_tokens(system[0]["text"])
    # Without marks nothing is cached at all.
    unmarked = await sim.messages.create(model=MODEL, max_tokens=1024, messages=[RESEARCH])
    assert unmarked.usage.cache_creation_input_tokens == unmarked.usage.cache_read_input_tokens == 0


# --- faults -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "error", "status", "kind"),
    [
        ("rate_429", anthropic.RateLimitError, 429, "rate_limit_error"),
        ("rate_529", anthropic.OverloadedError, 529, "overloaded_error"),
        ("rate_500", anthropic.InternalServerError, 500, "api_error"),
    ],
)
async def test_error_faults_surface_as_the_sdks_errors(
    start_sim: StartSim, rate: str, error: type[anthropic.APIStatusError], status: int, kind: str
) -> None:
    sim = await start_sim(**{rate: 1.0}, retry_after_s=2)
    with pytest.raises(error) as caught:
        await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    exc = caught.value
    assert exc.status_code == status
    assert type(exc) is error  # a 500 is not reported as overloaded, nor the reverse
    assert isinstance(exc.body, dict) and exc.body["type"] == "error"
    assert exc.body["error"]["type"] == kind
    assert exc.request_id is not None and exc.request_id.startswith("req_")
    if status in (429, 529):
        assert exc.response.headers["retry-after"] == "2"
    else:
        assert "retry-after" not in exc.response.headers
    [call] = await sim_calls(sim)
    assert call["status"] == status and call["fault"] == str(status) and call["usage"] is None


async def test_sdk_retries_honour_retry_after(start_sim: StartSim) -> None:
    # A seed whose first roll lands in the 429 share and whose second does not.
    def first_rolls(seed: int) -> list[bool]:
        rng = random.Random(seed)
        return [rng.random() < 0.5 for _ in range(2)]

    seed = next(s for s in range(100) if first_rolls(s) == [True, False])
    sim = await start_sim(rate_429=0.5, seed=seed, retry_after_s=0.3, max_retries=1)
    started = time.perf_counter()
    message = await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    assert time.perf_counter() - started >= 0.3
    assert message.stop_reason == "end_turn"
    calls = await sim_calls(sim)
    assert [(c["status"], c["fault"]) for c in calls] == [(429, "429"), (200, None)]


async def test_slow_call_times_out_an_impatient_client(start_sim: StartSim) -> None:
    sim = await start_sim(rate_slow=1.0, slow_s=0.4, client_timeout=0.1)
    started = time.perf_counter()
    with pytest.raises(anthropic.APITimeoutError):
        await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    assert time.perf_counter() - started < 0.4

    # A patient client gets the normal answer once the stall is over.
    started = time.perf_counter()
    message = await sim.with_options(timeout=5).messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[RESEARCH],
    )
    assert time.perf_counter() - started >= 0.4
    assert message.content[0].type == "text"


async def test_dropped_call_is_a_connection_error(start_sim: StartSim) -> None:
    sim = await start_sim(rate_drop=1.0)
    with pytest.raises(anthropic.APIConnectionError):
        await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    [call] = await sim_calls(sim)
    assert call["fault"] == "drop"


async def test_dropped_stream_breaks_off_after_a_partial_answer(start_sim: StartSim) -> None:
    sim = await start_sim(rate_drop=1.0)
    received = []

    async def read_stream() -> None:
        async with sim.messages.stream(model=MODEL, max_tokens=2048, messages=[WRITE]) as stream:
            async for text in stream.text_stream:
                received.append(text)

    # The SDK does not wrap a failure in the middle of a stream: httpx2's own error reaches
    # the caller, so that is what a retry policy must recognise.
    with pytest.raises(httpx2.RemoteProtocolError):
        await read_stream()
    assert received, "the stream broke off before any delta"
    [call] = await sim_calls(sim)
    assert call["fault"] == "drop" and call["stream"] is True


async def test_a_dropped_stream_sends_every_event_up_to_its_middle_delta(
    start_sim: StartSim,
) -> None:
    # Events without a pause between them leave in one write; a drop still cuts exactly
    # after the middle delta.
    async def events(client: anthropic.AsyncAnthropic) -> list[dict[str, Any]]:
        seen: list[dict[str, Any]] = []
        with contextlib.suppress(httpx2.RemoteProtocolError):
            async with client.messages.with_streaming_response.create(
                model=MODEL, max_tokens=2048, messages=[WRITE], stream=True
            ) as response:
                async for line in response.iter_lines():
                    if line.startswith("data: "):
                        seen.append(json.loads(line.removeprefix("data: ")))
        return seen

    whole = await events(await start_sim())
    cut = await events(await start_sim(rate_drop=1.0))
    deltas = [i for i, e in enumerate(whole) if e["type"] == "content_block_delta"]
    assert len(cut) == deltas[(len(deltas) - 1) // 2] + 1
    cut[0]["message"]["id"] = whole[0]["message"]["id"]
    assert cut == whole[: len(cut)]


async def test_faults_change_at_runtime(sim: anthropic.AsyncAnthropic) -> None:
    profile = await set_faults(sim, rate_500=1.0)
    assert profile["rate_500"] == 1.0
    with pytest.raises(anthropic.InternalServerError):
        await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])

    profile = await set_faults(sim, rate_500=0.0)
    assert profile["rate_500"] == 0.0
    await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])

    for bad in ({"rate_429": 2}, {"rate_429": 0.6, "rate_529": 0.6}, {"rate_typo": 0.1}):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await set_faults(sim, **bad)
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["error"]["type"] == "invalid_request_error"
    assert (await set_faults(sim))["rate_429"] == 0.0  # refused changes changed nothing


# --- the call log, requests refused -------------------------------------------------------


async def test_call_log_counts_exactly_the_calls_sent(sim: anthropic.AsyncAnthropic) -> None:
    plain = await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    async with sim.messages.stream(
        model=MODEL,
        max_tokens=64,
        messages=[RESEARCH],
        tools=TOOLS,
        tool_choice={"type": "tool", "name": KB_SEARCH_TOOL},
    ) as stream:
        await stream.until_done()
    with pytest.raises(anthropic.BadRequestError):
        await sim.messages.create(model=MODEL, max_tokens=0, messages=[RESEARCH])

    calls = await sim_calls(sim)
    assert [c["status"] for c in calls] == [200, 200, 400]
    assert calls[0]["id"] == plain._request_id
    assert calls[0]["stream"] is False and calls[1]["stream"] is True
    assert calls[1]["tools_offered"] == [KB_SEARCH_TOOL, FETCH_URL_TOOL]
    assert calls[1]["tool_choice"] == {"type": "tool", "name": KB_SEARCH_TOOL}
    assert calls[1]["stop_reason"] == "tool_use"
    assert calls[0]["usage"] == plain.usage.model_dump(exclude_none=True)
    assert all(c["finished_at"] >= c["received_at"] and c["duration_s"] >= 0 for c in calls)

    stats: dict[str, Any] = await sim.get("/_sim/stats", cast_to=object)
    assert stats["received"] == stats["finished"] == 3 and stats["in_flight"] == 0
    assert stats["by_status"] == {"200": 2, "400": 1}
    assert stats["usage"]["output_tokens"] == sum(c["usage"]["output_tokens"] for c in calls[:2])

    assert await sim.delete("/_sim/calls", cast_to=object) == {"cleared": 3}
    assert await sim_calls(sim) == []
    assert await sim.get("/healthz", cast_to=object) == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b'{"model": "m", "max_tokens": 5, "messages": [', "JSON"),
        ({"model": MODEL, "messages": [RESEARCH]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": "5", "messages": [RESEARCH]}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "robot", "content": "hi"}]},
            "role",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "messages": [RESEARCH],
                "tool_choice": {"type": "tool", "name": "nope"},
            },
            "tool_choice",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [RESEARCH], "tools": TOOLS + TOOLS},
            "unique",
        ),
        (
            {
                "model": MODEL,
                "max_tokens": 5,
                "tools": TOOLS,
                "messages": [
                    RESEARCH,
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "tool_use",
                                "id": "toolu_1",
                                "name": KB_SEARCH_TOOL,
                                "input": {},
                            }
                        ],
                    },
                    {"role": "user", "content": "What did you find?"},
                ],
            },
            "tool_result",
        ),
    ],
)
async def test_malformed_request_is_a_400_invalid_request_error(
    sim: anthropic.AsyncAnthropic, body: bytes | dict[str, Any], mentions: str
) -> None:
    sent = {"content": body} if isinstance(body, bytes) else {"body": body}
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sim.post("/v1/messages", cast_to=object, **sent)
    error = caught.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert mentions in error["error"]["message"]
    assert caught.value.request_id is not None


async def test_missing_api_key_is_a_401(start_sim: StartSim) -> None:
    no_key = {"X-Api-Key": anthropic.omit, "Authorization": anthropic.omit}
    sim = await start_sim()
    with pytest.raises(anthropic.AuthenticationError) as caught:
        await sim.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[RESEARCH],
            extra_headers=no_key,
        )
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "authentication_error"

    lenient = await start_sim(require_api_key=False)
    message = await lenient.messages.create(
        model=MODEL,
        max_tokens=64,
        messages=[RESEARCH],
        extra_headers=no_key,
    )
    assert message.stop_reason == "end_turn"


async def test_messages_are_measured_under_their_route(sim: anthropic.AsyncAnthropic) -> None:
    await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    with pytest.raises(anthropic.APIStatusError) as caught:
        await sim.get("/v1/messages", cast_to=object)
    assert caught.value.status_code == 405
    async with httpx2.AsyncClient(base_url=str(sim.base_url)) as http:
        metrics = (await http.get("/metrics")).text
    counted = "podcrew_http_server_requests_total{{method={},route={},status={}}}"
    assert counted.format('"POST"', '"/v1/messages"', '"200"') in metrics
    assert counted.format('"GET"', '"/v1/messages"', '"405"') in metrics


async def test_the_collector_runs_rarely_while_a_simulator_serves() -> None:
    app = create_simulator_app(SimulatorSettings())
    before = gc.get_threshold()
    async with app.router.lifespan_context(app):
        assert gc.get_threshold()[0] >= 50_000
        assert gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before


async def test_unknown_route_is_a_404_in_the_apis_shape(sim: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        await sim.get("/v1/no-such-thing", cast_to=object)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "not_found_error"
    assert caught.value.request_id is not None


async def test_anthropic_provider_honours_the_sdk_environment(
    launcher: Launcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ANTHROPIC_BASE_URL` and `ANTHROPIC_API_KEY` alone point podcrew's provider at a
    gateway: here, the simulator."""
    from podcrew_core.llm import LLMRequest, LLMSettings, Message, Stage, create_provider

    base_url = await asyncio.to_thread(launcher.start, SimulatorSettings())
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-from-env")
    provider = create_provider(LLMSettings(provider="anthropic"))
    try:
        request = LLMRequest(
            stage=Stage.RESEARCH,
            model="claude-haiku-4-5",
            system="You research.",
            messages=[Message(role="user", content=RESEARCH["content"])],
            tools=[KB_SEARCH_SPEC],
        )
        response = await provider.complete(request)
    finally:
        await provider.aclose()
    assert response.tool_uses()[0].name == "kb_search"
    assert response.usage.cost_usd > 0  # priced by the metered layer
    client = anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)
    calls = await sim_calls(client)
    await client.close()
    assert len(calls) == 1 and calls[0]["model"] == "claude-haiku-4-5"


# --- podcrew's provider, over aiohttp -----------------------------------------------------


@pytest.fixture
async def start_provider(launcher: Launcher) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Starts a simulator; returns podcrew's `AnthropicProvider` for it and an SDK client."""
    from podcrew_core.llm import LLMSettings
    from podcrew_core.llm.anthropic import AnthropicProvider

    opened: list[Any] = []

    async def start(
        llm: dict[str, Any] | None = None, **settings: Any
    ) -> tuple[AnthropicProvider, anthropic.AsyncAnthropic]:
        base_url = await asyncio.to_thread(launcher.start, SimulatorSettings(**settings))
        provider = AnthropicProvider(LLMSettings(**(llm or {})), base_url=base_url, api_key="k")
        client = anthropic.AsyncAnthropic(base_url=base_url, api_key="k", max_retries=0)
        opened.extend([provider, client])
        return provider, client

    yield start
    for item in opened:
        await (item.aclose() if hasattr(item, "aclose") else item.close())


def _llm_request(content: str, *, tools: bool) -> Any:
    from podcrew_core.llm import LLMRequest, Message, Stage

    return LLMRequest(
        stage=Stage.RESEARCH if tools else Stage.WRITE,
        model=MODEL,
        system="You answer.",
        messages=[Message(role="user", content=content)],
        tools=[KB_SEARCH_SPEC, FETCH_URL_SPEC] if tools else [],
        max_tokens=2048,
    )


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tool_use"])
async def test_provider_reads_what_the_sdks_models_and_message_stream_read(
    start_provider: Callable[..., Awaitable[Any]], tools: bool
) -> None:
    """Read as JSON, a reply and a stream accumulated by podcrew give the message (text,
    tool input, stop reason, every usage count) that the SDK's `Message` and `MessageStream`
    give for the same call."""
    from podcrew_core.llm import StreamEnd, TextDelta
    from podcrew_core.llm.anthropic import from_json, to_params

    provider, client = await start_provider()
    content = RESEARCH["content"] if tools else WRITE["content"]
    request = _llm_request(content, tools=tools)
    await provider.complete(request)  # the prompt cache is written once, then read by all
    plain = await client.messages.create(**to_params(request))
    got_plain = await provider.complete(request)
    assert got_plain.model_copy(update={"latency_s": 0.0}) == from_json(
        plain.model_dump(mode="json"), 0.0
    )
    async with client.messages.stream(**to_params(request)) as reference:
        final = await reference.get_final_message()
    expected = from_json(final.model_dump(mode="json"), 0.0)

    events = [event async for event in provider.stream(request)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    [end] = [e for e in events if isinstance(e, StreamEnd)]
    assert events[-1] is end
    got = end.response
    assert got.latency_s > 0
    assert got.model_copy(update={"latency_s": 0.0}) == expected
    assert got.usage.cache_read_input_tokens > 0 and got.usage.output_tokens > 1
    assert "".join(deltas) == got.content[0].text
    assert len(deltas) >= (1 if tools else 4)
    if tools:
        assert got.stop_reason == "tool_use"
        assert got.tool_uses()[0].input == {"query": SUB_QUESTION, "k": 5}


async def test_provider_reports_a_dropped_stream_as_unavailable(
    start_provider: Callable[..., Awaitable[Any]],
) -> None:
    from podcrew_core.contracts.errors import LLMUnavailable

    provider, _ = await start_provider(rate_drop=1.0)
    received = []

    async def read() -> None:
        async for event in provider.stream(_llm_request(WRITE["content"], tools=False)):
            received.append(event)

    with pytest.raises(LLMUnavailable, match="the LLM stream broke"):
        await read()
    assert received, "the stream broke off before any delta"


async def test_provider_errors_keep_their_meaning_over_aiohttp(
    start_provider: Callable[..., Awaitable[Any]],
) -> None:
    from podcrew_core.contracts.errors import LLMRateLimited, LLMTimeout, LLMUnavailable
    from podcrew_core.llm import LLMSettings
    from podcrew_core.llm.anthropic import AnthropicProvider

    request = _llm_request(RESEARCH["content"], tools=True)
    provider, client = await start_provider(rate_429=1.0, retry_after_s=2)
    with pytest.raises(LLMRateLimited) as limited:
        await provider.complete(request)
    assert limited.value.retry_after_s == 2.0
    with pytest.raises(LLMRateLimited) as limited_stream:  # refused before the stream began
        async for _ in provider.stream(_llm_request(WRITE["content"], tools=False)):
            pass
    assert limited_stream.value.retry_after_s == 2.0
    assert limited_stream.value.upstream_status == 429
    await set_faults(client, rate_429=0.0, rate_slow=1.0, slow_s=1.0)
    impatient, _ = await start_provider({"call_timeout_s": 0.2}, rate_slow=1.0, slow_s=1.0)
    started = time.perf_counter()
    with pytest.raises(LLMTimeout):
        await impatient.complete(request)
    assert time.perf_counter() - started < 0.9
    nowhere = AnthropicProvider(LLMSettings(), base_url="http://127.0.0.1:9", api_key="k")
    try:
        with pytest.raises(LLMUnavailable):  # refused: unreachable, not a timeout
            await nowhere.complete(request)
    finally:
        await nowhere.aclose()


def test_streamed_usage_is_overwritten_by_the_counts_message_delta_reports() -> None:
    """`message_delta` usage is cumulative: present counts replace `message_start`'s, absent
    or null ones leave them, as the SDK's accumulator does."""
    from podcrew_core.llm.anthropic import StreamedMessage

    start_usage = {
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 3,
    }
    message = StreamedMessage()
    texts = [
        message.add(event)
        for event in [
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": MODEL,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "Hi"},
            },
            {"type": "content_block_stop", "index": 0},
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "t1", "name": "kb_search", "input": {}},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"query": "gen'},
            },
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": 'erators"}'},
            },
            {"type": "content_block_stop", "index": 1},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
                "usage": {"output_tokens": 42, "input_tokens": 12, "cache_read_input_tokens": None},
            },
            {"type": "message_stop"},
        ]
    ]
    assert [t for t in texts if t is not None] == ["Hi"]
    response = message.response(0.1)
    assert response.text() == "Hi" and response.stop_reason == "max_tokens"
    assert response.tool_uses()[0].input == {"query": "generators"}
    usage = response.usage
    assert (usage.input_tokens, usage.output_tokens) == (12, 42)
    assert (usage.cache_creation_input_tokens, usage.cache_read_input_tokens) == (7, 3)
    assert usage.llm_calls == 1


async def test_an_error_event_mid_stream_fails_the_call_as_the_sdk_reports_it() -> None:
    """The API's `error` event ends a stream with the error the SDK's own stream raises."""
    from aiohttp import web

    from podcrew_core.llm import LLMSettings, TextDelta
    from podcrew_core.llm.anthropic import AnthropicProvider, map_error, to_params

    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1},
        },
    }
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    delta = {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hi"},
    }

    async def messages(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event in (start, block, delta, error):
            await response.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    provider = AnthropicProvider(LLMSettings(), base_url=url, api_key="k")
    client = anthropic.AsyncAnthropic(base_url=url, api_key="k", max_retries=0)
    request = _llm_request(WRITE["content"], tools=False)
    received: list[Any] = []

    async def read() -> None:
        async for event in provider.stream(request):
            received.append(event)

    try:
        with pytest.raises(anthropic.APIStatusError) as sdk:
            async with client.messages.stream(**to_params(request)) as stream:
                await stream.get_final_message()
        expected = map_error(sdk.value)
        with pytest.raises(type(expected)) as caught:
            await read()
    finally:
        await provider.aclose()
        await client.close()
        await runner.cleanup()
    assert received == [TextDelta(text="Hi")]
    assert caught.value.detail == expected.detail
    assert caught.value.upstream_status == expected.upstream_status


# --- the Message Batches API, and batch runs' calls through it ------------------------------


def _batch_hop(deadline_s: float = 60.0) -> Any:
    from podcrew_core.contracts.deadline import Deadline
    from podcrew_core.contracts.hop import Hop, RetryBudget

    return Hop("run-b", Deadline.after(deadline_s), RetryBudget(0), priority="batch")


async def test_the_sdk_creates_polls_reads_and_cancels_batches(start_sim: StartSim) -> None:
    client = await start_sim(batch_latency_s=0.3)
    params = {"model": MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
    batch = await client.messages.batches.create(
        requests=[
            {"custom_id": "a", "params": params},  # type: ignore[list-item]
            {"custom_id": "b", "params": {**params, "max_tokens": 0}},  # type: ignore[list-item]
        ]
    )
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 2
    assert batch.results_url is None
    await asyncio.sleep(0.35)
    ended = await client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 1)
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(batch.id)}
    assert results["a"].type == "succeeded"
    assert results["a"].message.content[0].type == "text"  # type: ignore[union-attr]
    assert results["a"].message.usage.output_tokens > 0  # type: ignore[union-attr]
    assert results["b"].type == "errored"

    slow = await start_sim(batch_latency_s=60)
    pending = await slow.messages.batches.create(requests=[{"custom_id": "a", "params": params}])  # type: ignore[list-item]
    canceled = await slow.messages.batches.cancel(pending.id)
    assert canceled.cancel_initiated_at is not None
    lines = [r async for r in await slow.messages.batches.results(pending.id)]
    assert [line.result.type for line in lines] == ["canceled"]
    with pytest.raises(anthropic.NotFoundError):
        await slow.messages.batches.retrieve("msgbatch_none")


async def test_batch_runs_calls_go_through_batches_at_half_price(
    start_provider: Callable[..., Awaitable[Any]],
) -> None:
    """In a batch run's hop a call is a Message Batch, priced at half; a streamed call
    comes whole; outside one, the same provider calls the Messages API."""
    from podcrew_core.llm import LLMSettings, StreamEnd, TextDelta
    from podcrew_core.llm.batch import BatchProvider
    from podcrew_core.llm.metered import MeteredProvider
    from podcrew_core.llm.pricing import BATCH_RATE
    from podcrew_core.runtime.scope import hop_context

    provider, client = await start_provider(batch_latency_s=0.2)
    settings = LLMSettings(batch_poll_initial_s=0.05, batch_poll_max_s=0.1)
    prices = settings.price_table()
    metered = MeteredProvider(BatchProvider(provider, settings), prices)
    interactive = await metered.complete(_llm_request("How do generators work?", tools=True))
    assert not interactive.batch
    with hop_context(_batch_hop()):
        batched = await metered.complete(_llm_request("How do generators work?", tools=True))
        streamed = [
            e async for e in metered.stream(_llm_request(json.dumps(REPORT_PAYLOAD), tools=False))
        ]
    assert batched.batch
    assert batched.content == interactive.content
    assert batched.usage.cost_usd == pytest.approx(
        prices.cost(MODEL, batched.usage.model_copy(update={"cost_usd": 0.0})) * BATCH_RATE
    )
    deltas = [e for e in streamed if isinstance(e, TextDelta)]
    end = streamed[-1]
    assert isinstance(end, StreamEnd)
    assert len(deltas) == 1
    assert deltas[0].text == end.response.text()
    assert end.response.batch
    batches = [b async for b in client.messages.batches.list()]
    assert len(batches) == 2


async def test_a_batch_that_outlives_the_deadline_is_cancelled(
    start_provider: Callable[..., Awaitable[Any]],
) -> None:
    from podcrew_core.contracts.errors import DeadlineExceeded
    from podcrew_core.llm import LLMSettings
    from podcrew_core.llm.batch import BatchProvider
    from podcrew_core.runtime.scope import hop_context

    provider, client = await start_provider(batch_latency_s=60)
    batching = BatchProvider(provider, LLMSettings(batch_poll_initial_s=0.1))
    with hop_context(_batch_hop(deadline_s=1.5)), pytest.raises(DeadlineExceeded):
        await batching.complete(_llm_request("How do generators work?", tools=True))
    (batch,) = [b async for b in client.messages.batches.list()]
    assert batch.cancel_initiated_at is not None


async def test_past_its_rate_limits_the_account_answers_429_with_the_apis_headers(
    start_sim: StartSim,
) -> None:
    sim = await start_sim(requests_per_minute=2, output_tokens_per_minute=10_000)
    raw = await sim.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[RESEARCH]
    )
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert raw.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    used = (await raw.parse()).usage.output_tokens
    remaining = int(raw.headers["anthropic-ratelimit-output-tokens-remaining"])
    assert remaining == 10_000 - used
    assert "anthropic-ratelimit-input-tokens-limit" not in raw.headers  # that limit is off
    await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    with pytest.raises(anthropic.RateLimitError) as caught:
        await sim.messages.create(model=MODEL, max_tokens=64, messages=[RESEARCH])
    headers = caught.value.response.headers
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert 1 <= int(headers["retry-after"]) <= 30  # a request comes back each 30 s
    # Another model has buckets of its own.
    await sim.messages.create(model=f"{MODEL}-20251001", max_tokens=64, messages=[RESEARCH])
