"""`python -m bench.sdkbench`: what podcrew's `AnthropicProvider` saves against the SDK's
normal API, per call, plain and streamed.

podcrew calls the official SDK through its documented `client.post`, with the body encoded
by orjson, and reads the answer as the API's JSON (the raw response, and the SDK's SSE
decoder with a small accumulator for a stream) instead of `messages.create` and
`messages.stream`, which build the SDK's models of the message, of every stream event and of
the message so far after every delta. This starts podcrew's simulated Messages API alone on
loopback and sends it the same requests both ways — a research turn (tools offered, answered
with a tool call) and a writer's report (streamed, ~150 text deltas) — one call at a time,
then `--concurrency` at once, and reports the client process's CPU per call. Both ways run
over the same transport (`anthropic.DefaultAioHttpClient`), so the difference is the API
used. The podcrew side is the provider class the services run, not a copy of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench import harness
from podcrew_core.contracts.schemas import Finding, ResearchedSection, Source, WriteRequest
from podcrew_core.llm import LLMRequest, LLMSettings, Message, Stage, ToolSpec
from podcrew_core.llm.anthropic import AnthropicProvider, to_params

Call = Callable[[], Awaitable[None]]

_TOOL = ToolSpec(
    name="search",
    description="Search the knowledge base.",
    input_schema={
        "type": "object",
        "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
        "required": ["query"],
    },
)
_MODEL = LLMSettings().models().research


def _report_request() -> LLMRequest:
    """The writer agent's own request for a report of 3 sections of 4 findings each."""
    from podcrew_writer.compose import prepare

    sections = [
        ResearchedSection(
            sub_question=f"Part {part} of how Python generators work?",
            findings=[
                Finding(
                    claim=f"A generator function returns an iterator that produces values "
                    f"lazily with yield, keeping its local state between calls ({part}.{n}).",
                    source=Source(id=f"kb:generators#{part}-{n}", title=f"Generators {n}"),
                )
                for n in range(1, 5)
            ],
        )
        for part in range(1, 4)
    ]
    body = WriteRequest(
        run_id="bench", question="How do Python generators work?", sections=sections
    )
    return prepare(body, _MODEL, 2048).request


def requests() -> dict[str, LLMRequest]:
    """The two shapes of call a run makes most: a research turn and a streamed report."""
    return {
        "research turn (complete)": LLMRequest(
            stage=Stage.RESEARCH,
            model=_MODEL,
            system="You are a research agent.",
            messages=[Message(role="user", content="How do Python generators work?")],
            tools=[_TOOL],
            max_tokens=1024,
        ),
        "report (stream)": _report_request(),
    }


def calls(url: str) -> tuple[dict[str, dict[str, Call]], Callable[[], Awaitable[None]]]:
    """For each request, the podcrew provider's call and the SDK's normal call."""
    import anthropic
    import httpx2

    provider = AnthropicProvider(
        LLMSettings(provider="simulated"), base_url=url, api_key="simulated", name="bench"
    )
    transport = anthropic.DefaultAioHttpClient(
        limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=1000)
    )
    sdk = anthropic.AsyncAnthropic(
        base_url=url, api_key="simulated", max_retries=0, http_client=transport
    )
    out: dict[str, dict[str, Call]] = {}
    for name, request in requests().items():
        params = to_params(request)
        if name.endswith("(stream)"):

            async def podcrew_call(request: LLMRequest = request) -> None:
                async for _ in provider.stream(request):
                    pass

            async def sdk_call(params: dict[str, Any] = params) -> None:
                async with sdk.messages.stream(**params) as stream:
                    async for _ in stream.text_stream:
                        pass
                    await stream.get_final_message()

        else:

            async def podcrew_call(request: LLMRequest = request) -> None:
                await provider.complete(request)

            async def sdk_call(params: dict[str, Any] = params) -> None:
                await sdk.messages.create(**params)

        out[name] = {
            "SDK normal API (messages.create / messages.stream)": sdk_call,
            "podcrew AnthropicProvider (client.post, JSON read)": podcrew_call,
        }

    async def close() -> None:
        await provider.aclose()
        await sdk.close()
        await transport.aclose()

    return out, close


async def _cpu_per_call(call: Call, count: int, width: int) -> float:
    for _ in range(20):  # warm-up: connections, first-call paths
        await call()
    before = time.process_time()
    for _ in range(count // width):
        await asyncio.gather(*(call() for _ in range(width)))
    return round(1000 * (time.process_time() - before) / (count // width * width), 3)


async def measure(url: str, count: int, concurrency: int) -> dict[str, Any]:
    table, close = calls(url)
    results: dict[str, Any] = {}
    try:
        for request_name, ways in table.items():
            for way, call in ways.items():
                for mode, width in (("sequential", 1), (f"{concurrency} at once", concurrency)):
                    cpu = await _cpu_per_call(call, count, width)
                    results.setdefault(request_name, {}).setdefault(way, {})[mode] = cpu
    finally:
        await close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sdkbench", description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    with harness.simulator(harness.simulator_env(0.0)) as url:
        results = asyncio.run(measure(url, args.calls, args.concurrency))
    print("| call | way | mode | client CPU ms/call |")
    print("|---|---|---|---|")
    for request_name, ways in results.items():
        for way, modes in ways.items():
            for mode, cpu in modes.items():
                print(f"| {request_name} | {way} | {mode} | {cpu:.3f} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
