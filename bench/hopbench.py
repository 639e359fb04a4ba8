"""`python -m bench.hopbench`: what one LLM hop costs with each HTTP client, in isolation.

Starts podcrew's simulated Messages API (alone, on loopback) and sends it the same research
request with several clients, one call at a time and then `--concurrency` at once. For each
call: the client's elapsed time minus the simulator's own duration for that call (matched by
the `request-id` it answers with) is the hop overhead (both HTTP stacks and the loopback),
and the client process's CPU time per call is what the client stack costs. The simulator's
server stack is the same for every client, so the differences are the clients'.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from bench import analysis, harness
from podcrew_core.runtime.http import create_http_client

REQUEST: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 1024,
    "system": [
        {
            "type": "text",
            "text": "You are a research agent.",
            "cache_control": {"type": "ephemeral"},
        }
    ],
    "messages": [
        {
            "role": "user",
            "content": "Sub-question: What are the mechanics of Python generators?\n"
            "Original question: How do Python generators work?",
        }
    ],
    "tools": [
        {
            "name": "kb_search",
            "description": "Search the knowledge base.",
            "input_schema": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "k": {"type": "integer"}},
                "required": ["query"],
            },
        },
        {
            "name": "submit_findings",
            "description": "Submit your findings.",
            "input_schema": {
                "type": "object",
                "properties": {"findings": {"type": "array", "items": {"type": "object"}}},
                "required": ["findings"],
            },
            "cache_control": {"type": "ephemeral"},
        },
    ],
}
HEADERS = {
    "x-api-key": "simulated",
    "anthropic-version": "2023-06-01",
    "content-type": "application/json",
}

Call = Callable[[], Awaitable[str]]  # returns the simulator's request id
Close = Callable[[], Awaitable[None]]
POOL = 1000  # connections per client: never the limit at any concurrency measured


async def clients(url: str) -> dict[str, tuple[Call, Close]]:
    """Every client measured, by the name the table gives it, in the table's order; each
    with the coroutine that closes it. Built in the event loop that will use them."""
    return {**_raw_clients(url), **_sdk_clients(url)}


def _raw_clients(url: str) -> dict[str, tuple[Call, Close]]:
    """The HTTP libraries alone, posting the same bytes."""
    import aiohttp
    import httpx2

    body = json.dumps(REQUEST).encode()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=POOL))

    async def aiohttp_call() -> str:
        async with session.post(f"{url}/v1/messages", data=body, headers=HEADERS) as r:
            await r.read()
            return r.headers["request-id"]

    def httpx_call(client: Any) -> Call:
        async def call() -> str:
            r = await client.post(f"{url}/v1/messages", content=body, headers=HEADERS)
            return str(r.headers["request-id"])

        return call

    out: dict[str, tuple[Call, Close]] = {"aiohttp (raw)": (aiohttp_call, session.close)}
    for name, module in (("httpx (raw)", httpx), ("httpx2 (raw)", httpx2)):
        limits = module.Limits(max_connections=POOL, max_keepalive_connections=POOL)
        client = module.AsyncClient(limits=limits)
        out[name] = (httpx_call(client), client.aclose)
    # podcrew's internal client: httpx's API over aiohttp's HTTP stack (runtime/transport.py).
    internal = create_http_client(POOL)
    out["httpx over aiohttp (podcrew's internal client)"] = (httpx_call(internal), internal.aclose)
    return out


def _sdk_clients(url: str) -> dict[str, tuple[Call, Close]]:
    """The official SDK over each transport, called as podcrew has called it in turn."""
    import anthropic
    import httpx2

    limits = httpx2.Limits(max_connections=POOL, max_keepalive_connections=POOL)

    def parsed(sdk: Any) -> Call:  # the SDK's own parsing into its types
        async def call() -> str:
            raw = await sdk.messages.with_raw_response.create(**REQUEST)
            await raw.parse()
            return str(raw.headers["request-id"])

        return call

    def read_as_json(sdk: Any) -> Call:
        async def call() -> str:
            raw = await sdk.messages.with_raw_response.create(**REQUEST)
            orjson.loads(await raw.read())
            return str(raw.headers["request-id"])

        return call

    def posted(sdk: Any) -> Call:  # `client.post` with the body as orjson bytes
        async def call() -> str:
            response = await sdk.post(
                "/v1/messages", cast_to=httpx2.Response, content=orjson.dumps(REQUEST)
            )
            orjson.loads(response.content)
            return str(response.headers["request-id"])

        return call

    aiohttp = anthropic.DefaultAioHttpClient
    out: dict[str, tuple[Call, Close]] = {}
    for name, http, make in (
        ("anthropic SDK over httpx2 (podcrew in round 1)", httpx2.AsyncClient, parsed),
        ("anthropic SDK over aiohttp (DefaultAioHttpClient)", aiohttp, parsed),
        (
            "anthropic SDK over aiohttp, reply read as JSON (podcrew in round 3)",
            aiohttp,
            read_as_json,
        ),
        (
            "anthropic SDK `client.post`, body by orjson, over aiohttp (podcrew now)",
            aiohttp,
            posted,
        ),
    ):
        transport = http(limits=limits)
        sdk = anthropic.AsyncAnthropic(
            base_url=url, api_key="simulated", max_retries=0, http_client=transport
        )
        out[name] = (make(sdk), transport.aclose)
    return out


async def measure(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=url) as admin:
        for name, (call, close) in (await clients(url)).items():
            for _ in range(20):  # warm-up: connections, first-call paths
                await call()
            for mode, width in (("sequential", 1), (f"{concurrency} at once", concurrency)):
                await admin.delete("/_sim/calls")
                elapsed: dict[str, float] = {}

                async def one(call: Call = call, elapsed: dict[str, float] = elapsed) -> None:
                    started = time.perf_counter()
                    request_id = await call()
                    elapsed[request_id] = time.perf_counter() - started

                cpu_before = time.process_time()
                for _ in range(calls // width):
                    await asyncio.gather(*(one() for _ in range(width)))
                cpu = time.process_time() - cpu_before
                server = {c["id"]: c["duration_s"] for c in (await admin.get("/_sim/calls")).json()}
                overhead = [t - server[i] for i, t in elapsed.items() if i in server]
                results.setdefault(name, {})[mode] = {
                    "hop_overhead_ms": analysis.summary(overhead, 1000),
                    "client_cpu_ms_per_call": round(1000 * cpu / max(1, len(elapsed)), 3),
                }
            await close()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hopbench", description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--latency", type=float, default=0.0, help="simulated seconds per call")
    args = parser.parse_args()
    env = {"PODCREW_SIM_LATENCY_S": str(args.latency), "PODCREW_SIM_LOG_LEVEL": "WARNING"}
    with harness.simulator(env) as url:
        try:
            import uvloop

            results = uvloop.run(measure(url, args.calls, args.concurrency))
        except ImportError:  # pragma: no cover
            results = asyncio.run(measure(url, args.calls, args.concurrency))
    print("| client | mode | hop overhead p50 (ms) | p95 | client CPU ms/call |")
    print("|---|---|---|---|---|")
    for name, modes in results.items():
        for mode, r in modes.items():
            h, cpu = r["hop_overhead_ms"], r["client_cpu_ms_per_call"]
            print(f"| {name} | {mode} | {h['p50']:.2f} | {h['p95']:.2f} | {cpu:.2f} |")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
