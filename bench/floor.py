"""`python -m bench.floor`: what a run costs on the stacks podcrew is built on, with none of
podcrew's own code: the floor under the budgets of DESIGN.md on this machine.

It runs the shape of a podcrew run with the fewest parts the design allows, every part on
the stack podcrew uses for it (uvicorn with uvloop and httptools, FastAPI routes with
pydantic bodies, httpx over aiohttp between services, the official `anthropic` SDK over
aiohttp for every LLM call, its leanest path: `client.post` with an orjson body):

- a **gateway** process stands for the api and the worker together (no Redis, no queue, no
  second process: fewer parts than podcrew has, so what it measures is a lower bound).
  `POST /run` makes the plan call, sends the 3 sub-questions to the agent at once, then
  asks it to write, and answers;
- an **agent** process stands for the research and writer agents: `POST /research` makes
  two LLM calls one after the other (the tool-use turn and the findings turn), `POST
  /write` one streamed LLM call whose text it answers as JSON (no SSE: less than podcrew);
- podcrew's simulated Messages API answers after `--latency` seconds, and this process
  keeps each level's runs going (`--levels`, `--rounds` runs per user). Neither is counted.

It reports the gateway's and the agent's CPU per run (from /proc), the LLM hop's overhead
(the SDK's time minus the simulator's for the same call) and the agent hop's (the gateway's
time for a research request minus the agent's own), and the RSS growth per run in flight.
With 8 LLM calls and 4 internal requests per run, as podcrew's default fan-out makes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import analysis, harness, report
from bench.procstat import cpu_seconds, rss_kib
from podcrew_cli.stack import LOOPBACK, free_port

CALLS_PER_RUN = 8  # plan, 3 sub-questions x 2 turns, write: podcrew's default fan-out
REQUESTS_PER_RUN = 4  # 3 research requests and the write request


async def drive(url: str, concurrency: int, runs_per_user: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency + 8),
        timeout=aiohttp.ClientTimeout(total=600),
    ) as session:

        async def user(i: int) -> None:
            for j in range(runs_per_user):
                async with session.post(f"{url}/run", json={"question": f"q {i} {j}"}) as r:
                    r.raise_for_status()
                    await r.read()

        started = time.perf_counter()
        await asyncio.gather(*(user(i) for i in range(concurrency)))
        return time.perf_counter() - started


async def sampled(work: Awaitable[float], peak: dict[subprocess.Popen[bytes], int]) -> float:
    """Await `work` while keeping the peak RSS of each process in `peak`."""
    task = asyncio.ensure_future(work)
    while not task.done():
        for p, highest in peak.items():
            peak[p] = max(highest, rss_kib(p.pid))
        await asyncio.sleep(0.05)
    return task.result()


@dataclass
class Floor:
    """The floor's processes on loopback: the simulated Messages API, the agent, the gateway."""

    sim_url: str
    agent_url: str
    gateway_url: str
    agent: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]


@contextlib.contextmanager
def started(latency_s: float) -> Iterator[Floor]:
    """Start the simulator, then the agent and the gateway, and wait until each answers;
    all are stopped on exit."""
    sim_port, agent_port, gateway_port = free_port(), free_port(), free_port()
    sim_url = f"http://{LOOPBACK}:{sim_port}"
    agent_url = f"http://{LOOPBACK}:{agent_port}"
    gateway_url = f"http://{LOOPBACK}:{gateway_port}"
    env = {
        **os.environ,
        **harness.simulator_env(latency_s),
        "PODCREW_SIM_PORT": str(sim_port),
        "PODCREW_SIM_HOST": LOOPBACK,
    }
    simulator = subprocess.Popen([sys.executable, "-m", "podcrew_cli", "simulate-llm"], env=env)
    procs = [simulator]

    def service(role: str, port: int) -> subprocess.Popen[bytes]:
        command = ["-m", "bench.floor_service", role, str(port), sim_url, agent_url]
        process = subprocess.Popen([sys.executable, *command], env=env)
        procs.append(process)
        return process

    try:
        harness.wait_http(f"{sim_url}/healthz", simulator)
        agent, gateway = service("agent", agent_port), service("gateway", gateway_port)
        harness.wait_http(f"{agent_url}/stats", agent)
        harness.wait_http(f"{gateway_url}/stats", gateway)
        yield Floor(sim_url, agent_url, gateway_url, agent, gateway)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


def run_loop(work: Coroutine[Any, Any, float]) -> float:
    """Run `work` on uvloop, as podcrew's services run, where it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(work)
    return uvloop.run(work)


def measure_level(floor: Floor, level: int, rounds: int) -> dict[str, Any]:
    """`level` users, `rounds` runs each: runs/s, the CPU of both processes per run, the
    hops' overheads, the RSS growth per run in flight."""
    for url in (floor.agent_url, floor.gateway_url):  # reading the stats empties them
        httpx.get(f"{url}/stats")
    httpx.delete(f"{floor.sim_url}/_sim/calls")
    agent, gateway = floor.agent, floor.gateway
    cpu_before = {p: cpu_seconds(p.pid) for p in (agent, gateway)}
    rss_before = {p: rss_kib(p.pid) for p in (agent, gateway)}
    peak = dict(rss_before)
    runs = level * rounds

    wall = run_loop(sampled(drive(floor.gateway_url, level, rounds), peak))
    cpu = {p: cpu_seconds(p.pid) - cpu_before[p] for p in (agent, gateway)}
    llm, hop = overheads(floor)
    growth = sum(peak[p] - rss_before[p] for p in peak)
    return {
        "level": level,
        "runs": runs,
        "llm_calls_per_run": CALLS_PER_RUN,
        "internal_requests_per_run": REQUESTS_PER_RUN,
        "runs_per_s": round(runs / wall, 2),
        "cpu_ms_per_run": {
            "agent": round(1000 * cpu[agent] / runs, 2),
            "gateway": round(1000 * cpu[gateway] / runs, 2),
            "total": round(1000 * (cpu[agent] + cpu[gateway]) / runs, 2),
        },
        "llm_hop_overhead_ms": analysis.summary(llm, 1000),
        "agent_hop_overhead_ms": analysis.summary(hop, 1000),
        "kib_per_inflight_run": round(growth / level, 1),
    }


def overheads(floor: Floor) -> tuple[list[float], list[float]]:
    """Each LLM call's time in the SDK minus the simulator's for the same call, and each
    research request's time at the gateway minus the agent's own, since the stats were
    last read."""
    calls = httpx.get(f"{floor.sim_url}/_sim/calls").json()
    sim_calls = {c["id"]: c["duration_s"] for c in calls}
    llm: list[float] = []
    hop: list[float] = []
    for url in (floor.agent_url, floor.gateway_url):
        stats = httpx.get(f"{url}/stats").json()
        llm += [t - sim_calls[i] for i, t in stats["llm"] if i in sim_calls]
        hop += stats["hop"]
    return llm, hop


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--levels", default="10,500", help="concurrent runs per level")
    parser.add_argument("--rounds", type=int, default=3, help="runs per virtual user")
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per LLM call")
    parser.add_argument("--warmup", type=int, default=20, help="runs before the levels")
    parser.add_argument("--out", default="bench/results", help="directory for the JSON")
    parser.add_argument("--name", help="results file name (without .json)")
    args = parser.parse_args()
    results: dict[str, Any] = {"command": " ".join(["python -m bench.floor", *sys.argv[1:]])}
    with started(args.latency) as floor:
        if args.warmup:  # connections, first-call paths
            run_loop(drive(floor.gateway_url, min(10, args.warmup), max(1, args.warmup // 10)))
        levels = (int(x) for x in args.levels.split(",") if x)
        results["levels"] = [measure_level(floor, level, args.rounds) for level in levels]
    print("\n".join(report.floor_table(results["levels"])))
    name = args.name or f"floor-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    out = Path(args.out) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"JSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
