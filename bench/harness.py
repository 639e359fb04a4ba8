"""`python -m bench`: podcrew's benchmark (`make bench`).

Measures the floor first (bench/floor.py: the shape of a run on podcrew's stacks with none
of its code) at the same levels, alone; then starts the real stack on loopback (Redis, api,
worker(s), research agent, writer agent) with the simulated Messages API at a fixed latency
per call, drives N concurrent runs per level with a load generator in its own process, runs
the peers (the tutorial-style baseline, then the same pipeline as an in-process LangGraph
graph) one at a time against the same simulated server, holds 1,000 SSE streams on one api
process, and writes a table, the verdict on DESIGN.md's budgets and JSON to bench/results/.
Method and reading guide: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis

from bench import analysis, floor, procstat, report
from podcrew_cli.stack import LOOPBACK, Stack, StackConfig, free_port

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
KEY_PREFIX = "podcrew"
PYTHON_SERVICES = ("api", "research-agent", "writer-agent")  # and every worker-N
UNLIMITED_TENANT = {
    "requests_per_minute": 100_000_000,
    "burst": 10_000_000,
    "concurrent_runs": 10_000_000,
    "daily_tokens": 10**15,
    "daily_cost_usd": 10**12,
}


@dataclass
class Options:
    levels: list[int]
    latency_s: float = 0.5
    rounds: int | None = None
    workers: int = 1
    baseline: bool = True
    baseline_levels: list[int] | None = None
    baseline_window_s: float = 20.0
    langgraph: bool = True
    langgraph_levels: list[int] | None = None
    floor: bool = True
    streams: int = 1000
    warmup: int = 20
    out_dir: Path = RESULTS
    name: str | None = None
    keep_logs: Path | None = None
    redis_max_connections: int | None = None
    extra_env: dict[str, str] | None = None
    quiet: bool = False
    stagger_s: float = 0.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def log(opts: Options, message: str) -> None:
    if not opts.quiet:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_http(
    url: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 60.0
) -> None:
    """Return once `url` answers without a server error; raise if it does not within
    `timeout_s`, or if `process` (the server behind it) exits first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or (process is not None and process.poll() is not None):
            raise RuntimeError(f"{url} did not start")
        time.sleep(0.1)


def simulator_env(latency_s: float) -> dict[str, str]:
    """The simulated Messages API of every benchmark: each call takes `latency_s` (a
    stream's deltas then come at once), no admission limit, a call log large enough."""
    big = "100000"
    return {
        "PODCREW_SIM_LATENCY_S": str(latency_s),
        "PODCREW_SIM_TTFT_S": str(latency_s),
        "PODCREW_SIM_STREAM_CHUNK_DELAY_S": "0",
        "PODCREW_SIM_MAX_CONCURRENCY": big,
        "PODCREW_SIM_MAX_QUEUE": big,
        "PODCREW_SIM_CALL_LOG_SIZE": "500000",
        "PODCREW_SIM_LOG_LEVEL": "WARNING",
    }


@contextlib.contextmanager
def simulator(env: dict[str, str]) -> Iterator[str]:
    """podcrew's simulated Messages API alone on a free loopback port, with `env` on top of
    this process's environment; its URL once it answers, stopped on the way out."""
    port = free_port()
    full = {**os.environ, **env, "PODCREW_SIM_PORT": str(port), "PODCREW_SIM_HOST": LOOPBACK}
    process = subprocess.Popen(
        [sys.executable, "-m", "podcrew_cli", "simulate-llm"], env=full, stdout=subprocess.DEVNULL
    )
    url = f"http://{LOOPBACK}:{port}"
    try:
        wait_http(f"{url}/healthz", process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def stack_env(opts: Options) -> dict[str, str]:
    """Settings that keep the stack's protections from shaping the measurement: tenant
    limits, the result cache, coalescing and the tool cache off or lifted; concurrency and
    pools wide enough for the largest level; the breaker far from opening (errors still
    count). Bytecode is cached outside the tree so processes start faster."""
    big = "100000"
    env = {
        **simulator_env(opts.latency_s),
        "PODCREW_ORCHESTRATOR_DEFAULT_TENANT_LIMITS": json.dumps(UNLIMITED_TENANT),
        "PODCREW_ORCHESTRATOR_DAILY_SPEND_CAP_USD": "1000000000",
        "PODCREW_ORCHESTRATOR_RESULT_CACHE_TTL_S": "0",
        "PODCREW_ORCHESTRATOR_COALESCE": "false",
        # The worker's back-pressure, sized to this machine: 2 cores finish ~40 runs/s of
        # ~2.1 s each, ~85 at once. Runs past it wait in the queue, cheaply; more admitted
        # runs the CPU could not serve yet only add latency and memory: 128 gave fewer runs/s
        # than 96, at more CPU and memory per run (docs/benchmarks.md, round 4).
        "PODCREW_ORCHESTRATOR_WORKER_CONCURRENCY": "96",
        "PODCREW_ORCHESTRATOR_MAX_CONCURRENCY": big,
        "PODCREW_ORCHESTRATOR_MAX_QUEUE": big,
        "PODCREW_ORCHESTRATOR_MAX_WAIT_S": "600",
        "PODCREW_ORCHESTRATOR_HTTP_MAX_CONNECTIONS": "8192",
        "PODCREW_ORCHESTRATOR_MAX_EVENT_STREAMS": big,
        "PODCREW_RESEARCH_MAX_CONCURRENCY": big,
        "PODCREW_RESEARCH_MAX_QUEUE": big,
        "PODCREW_RESEARCH_TOOL_CACHE_TTL_S": "0",
        "PODCREW_WRITER_MAX_CONCURRENCY": big,
        "PODCREW_WRITER_MAX_QUEUE": big,
        "PODCREW_LLM_MAX_CONNECTIONS": "8192",
        "PODCREW_LLM_BREAKER_CONSECUTIVE_FAILURES": "1000000",
        "PODCREW_LLM_BREAKER_MIN_CALLS": "1000000",
        "PYTHONDONTWRITEBYTECODE": "",
        "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "podcrew-bench-pycache"),
    }
    return {**env, **(opts.extra_env or {})}


def rounds_for(level: int, opts: Options) -> int:
    if opts.rounds is not None:
        return opts.rounds
    if level == 1:
        return 8
    # 3 at 500: with one run per user a level is one burst, ramp-up and tail, with no
    # steady part to measure the throughput in.
    return 3 if level >= 500 else max(2, math.ceil(50 / level))


# --- the stack --------------------------------------------------------------------------


def start_stack(
    opts: Options, attempts: int = 3, on_config: Callable[[StackConfig], None] | None = None
) -> Stack:
    """The stack with the tapped simulator; retried, since a service may be mid-edit."""
    last: BaseException | None = None
    for attempt in range(attempts):
        config = StackConfig.on_free_ports(
            llm="simulated", workers=opts.workers, env=stack_env(opts)
        )
        if opts.redis_max_connections:
            # redis-py's asyncio pool holds at most 100 connections unless the URL says more.
            config.env["PODCREW_REDIS_URL"] = (
                f"{config.redis_url}?max_connections={opts.redis_max_connections}"
            )
        stack = Stack(config)
        stack.services["llm-simulator"].argv = [sys.executable, str(BENCH / "simtap.py")]
        if on_config is not None:
            on_config(config)
        try:
            stack.__enter__()
            return stack
        except (RuntimeError, TimeoutError) as exc:  # __enter__ closed it already
            last = exc
            log(opts, f"stack did not start ({exc}); retrying in 10 s")
            if attempt + 1 < attempts:
                time.sleep(10)
    raise RuntimeError(f"the stack did not start after {attempts} attempts") from last


def podcrew_pids(stack: Stack) -> dict[str, int]:
    pids = {}
    for name, service in stack.services.items():
        if name == "llm-simulator" or service.process is None:
            continue
        pids[name] = service.process.pid
    return pids


def is_python_service(name: str) -> bool:
    return name in PYTHON_SERVICES or name.startswith("worker-")


def service_ports(stack: Stack) -> dict[str, int]:
    c = stack.config
    ports = {"api": c.api_port, "research-agent": c.research_port, "writer-agent": c.writer_port}
    for name, service in stack.services.items():
        if name.startswith("worker-"):
            port = service.env.get("PODCREW_ORCHESTRATOR_WORKER_PORT")
            if port:
                ports[name] = int(port)
    return ports


def scrape(stack: Stack) -> dict[str, str]:
    pages = {}
    with httpx.Client(timeout=10) as client:
        for name, port in service_ports(stack).items():
            with contextlib.suppress(httpx.HTTPError):
                pages[name] = client.get(f"http://{LOOPBACK}:{port}/metrics").text
    return pages


class LogTail:
    """New `llm_call` lines of the services' JSON logs since `mark()`."""

    def __init__(self, stack: Stack) -> None:
        self.paths = {n: s.log_path for n, s in stack.services.items() if is_python_service(n)}
        self.offsets: dict[str, int] = {}

    def mark(self) -> None:
        self.offsets = {n: p.stat().st_size if p.exists() else 0 for n, p in self.paths.items()}

    def llm_calls(self) -> list[dict[str, Any]]:
        lines = []
        for name, path in self.paths.items():
            with path.open("rb") as f:
                f.seek(self.offsets.get(name, 0))
                for raw in f:
                    if b'"llm_call"' not in raw:
                        continue
                    with contextlib.suppress(orjson.JSONDecodeError):
                        line = orjson.loads(raw)
                        if line.get("event") == "llm_call":
                            line["service"] = name
                            lines.append(line)
        return lines


# --- the load generator -----------------------------------------------------------------


@contextlib.contextmanager
def _job_files(job: dict[str, Any]) -> Iterator[tuple[Path, Path]]:
    """A load generator's job written as JSON in a temporary directory, and the path it
    writes its result to; both are gone on exit."""
    with tempfile.TemporaryDirectory(prefix="podcrew-bench-") as tmp:
        path, out = Path(tmp) / "job.json", Path(tmp) / "out.json"
        path.write_text(json.dumps({**job, "out": str(out)}))
        yield path, out


def _start_loadgen(job_path: Path, stdout: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen", str(job_path)],
        cwd=REPO,
        stdout=stdout,
        preexec_fn=_die_with_parent,  # noqa: PLW1509
    )


def loadgen(job: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """Run the load generator to completion; its result and the CPU seconds it used."""
    with _job_files(job) as (path, out):
        proc = _start_loadgen(path, subprocess.DEVNULL)
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"load generator failed with exit code {proc.returncode}")
        return orjson.loads(out.read_bytes()), rusage.ru_utime + rusage.ru_stime


def runs_job(
    target: str,
    url: str,
    concurrency: int,
    runs_per_user: int | None,
    prefix: str,
    timeout_s: float = 900,
    **extra: Any,
) -> dict[str, Any]:
    """A `runs` job for the load generator: `concurrency` users, each running
    `runs_per_user` runs one after another, tagged `prefix` and a fresh suffix so that no
    result is cached. podcrew is asked to wait up to 600 s for each result."""
    job = {
        "mode": "runs",
        "target": target,
        "url": url,
        "concurrency": concurrency,
        "runs_per_user": runs_per_user,
        "prefix": f"{prefix}{uuid.uuid4().hex[:6]}",
        "timeout_s": timeout_s,
        **extra,
    }
    if target == "podcrew":
        job["wait_s"] = 600
    return job


@dataclass
class Measured:
    """One level's load: the load generator's records, the simulator's call log, and what
    the measured processes, the load generator, the simulator and this process used."""

    load: dict[str, Any]
    calls: list[dict[str, Any]]
    usage: procstat.Usage
    loadgen_cpu_s: float
    simulator_cpu_s: float
    harness_cpu_s: float


def measure_load(ctx: Context, pids: dict[str, int], job: dict[str, Any]) -> Measured:
    """Drive `job` while sampling `pids`. The simulator's call log is emptied first, so it
    then holds the level's calls alone; the CPU of the simulator and of this process is
    counted apart, so that neither is taken for the measured system's."""
    ctx.sim.delete("/_bench/calls")
    sim_before = procstat.cpu_seconds(ctx.sim_pid)
    harness_before = procstat.cpu_seconds(os.getpid())
    sampler = procstat.Sampler(pids).start()
    load, loadgen_cpu = loadgen(job)
    usage = sampler.stop()
    sim_cpu = procstat.cpu_seconds(ctx.sim_pid) - sim_before
    harness_cpu = procstat.cpu_seconds(os.getpid()) - harness_before
    calls = ctx.sim.get("/_bench/calls").json()
    return Measured(load, calls, usage, loadgen_cpu, sim_cpu, harness_cpu)


# --- one level --------------------------------------------------------------------------


def run_events(r: redis.Redis, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's events that matter for the timeline (not the writer deltas)."""
    out = []
    for _, fields in r.xrange(f"{KEY_PREFIX}:run:{run_id}:events"):
        kind = fields[b"type"].decode()
        if kind in ("writer.delta", "tool.called"):
            continue
        out.append((kind, orjson.loads(fields[b"data"])))
    return out


def level_summary(
    *,
    system: str,
    level: int,
    measured: Measured,
    python_procs: list[str],
    llm_lines: list[dict[str, Any]] | None = None,
    metrics: tuple[dict[str, str], dict[str, str]] | None = None,
    events: dict[str, list[tuple[str, dict[str, Any]]]] | None = None,
    redis_growth_kib: float | None = None,
    redis_commands: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One level's row of the results: outcomes and latency, CPU and memory per run, and
    what only podcrew's own logs, metrics and Redis can tell where they are given."""
    ok = [r for r in measured.load["runs"] if r.get("ok")]
    by_tag = analysis.calls_by_tag(measured.calls)
    result = _outcomes(system, level, measured.load, ok, by_tag)
    completed = max(1, len(ok))
    result["cpu"] = _cpu(measured, completed)
    result["memory"] = _memory(measured.usage, python_procs, level)
    if redis_growth_kib is not None:
        result["memory"]["redis_retained_kib_per_run"] = round(redis_growth_kib / completed, 2)
    if redis_commands is not None:  # everything Redis served during the level, per run
        by_command = sorted(redis_commands.items(), key=lambda kv: -kv[1])
        result["redis_commands_per_run"] = {
            "all": round(sum(redis_commands.values()) / completed, 2),
            **{name: round(count / completed, 2) for name, count in by_command},
        }
    if llm_lines is not None:
        result["llm_hop_overhead_ms"] = _llm_hop_overhead(ok, by_tag, llm_lines)
    if metrics is not None:
        result["internal_hops_ms"] = internal_hops(*metrics, llm_lines or [])
    if events is not None:
        result["timeline_ms"] = _timeline(ok, by_tag, events)
    return result


def _outcomes(
    system: str,
    level: int,
    load: dict[str, Any],
    ok: list[dict[str, Any]],
    by_tag: dict[str, list[dict[str, Any]]],
) -> dict[str, Any]:
    """How many runs succeeded, how fast, and their end-to-end time against the critical
    path of their LLM calls."""
    runs = load["runs"]
    errors = Counter(r["error"] for r in runs if not r.get("ok"))
    paths = {r["tag"]: analysis.critical_path(by_tag.get(r["tag"], [])) for r in ok}
    e2e = [r["e2e_s"] for r in ok]
    crit = [p["critical_s"] for p in paths.values() if p]
    ratios = [r["e2e_s"] / paths[r["tag"]]["critical_s"] for r in ok if paths.get(r["tag"])]
    e2e_p50, crit_p50 = analysis.percentile(e2e, 50), analysis.percentile(crit, 50)
    return {
        "system": system,
        "level": level,
        "runs": len(runs),
        "succeeded": len(ok),
        "errors": dict(errors),
        "error_examples": sorted({r.get("detail") or r["error"] for r in runs if not r.get("ok")})[
            :3
        ],
        "duration_limited": load.get("duration_limited", False),
        "throughput": analysis.throughput(runs, load.get("window_s")),
        "e2e_ms": analysis.summary(e2e, 1000),
        "critical_path_ms": analysis.summary(crit, 1000),
        "e2e_over_critical": {
            "p50_over_p50": round(e2e_p50 / crit_p50, 4) if e2e_p50 and crit_p50 else None,
            "per_run": analysis.summary(ratios),
        },
        "llm_calls_per_run": analysis.summary([float(p["llm_calls"]) for p in paths.values() if p]),
        "fanout": analysis.summary([float(p["fanout"]) for p in paths.values() if p]),
    }


def _cpu(measured: Measured, completed: int) -> dict[str, Any]:
    """CPU per completed run, by process, and how busy the cores were, by whom."""
    usage = measured.usage
    ours = {n: usage.cpu_s[n] for n in usage.cpu_s}
    others = (
        usage.machine_cpu_s - sum(ours.values()) - measured.simulator_cpu_s - measured.loadgen_cpu_s
    )
    return {
        "ms_per_run": round(1000 * sum(ours.values()) / completed, 3),
        "ms_per_run_without_redis": round(
            1000 * sum(v for n, v in ours.items() if n != "redis") / completed, 3
        ),
        "ms_per_run_by_process": {n: round(1000 * v / completed, 3) for n, v in ours.items()},
        "simulator_ms_per_run": round(1000 * measured.simulator_cpu_s / completed, 3),
        "loadgen_ms_per_run": round(1000 * measured.loadgen_cpu_s / completed, 3),
        "wall_s": round(usage.wall_s, 3),
        "cores_busy": {
            "measured": round(sum(ours.values()) / usage.wall_s, 3),
            "simulator": round(measured.simulator_cpu_s / usage.wall_s, 3),
            "loadgen": round(measured.loadgen_cpu_s / usage.wall_s, 3),
            "other_processes": round(max(0.0, others - measured.harness_cpu_s) / usage.wall_s, 3),
        },
    }


def _memory(usage: procstat.Usage, python_procs: list[str], level: int) -> dict[str, Any]:
    """RSS of each process before, at its peak and after; the growth of the Python
    processes, per run in flight."""
    growth = {
        n: usage.rss_peak_kib[n] - usage.rss_before_kib[n]
        for n in usage.rss_peak_kib
        if n in python_procs
    }
    return {
        "rss_before_kib": usage.rss_before_kib,
        "rss_peak_kib": usage.rss_peak_kib,
        "rss_after_kib": usage.rss_after_kib,
        "rss_growth_kib": growth,
        "kib_per_inflight_run": round(sum(growth.values()) / level, 2),
    }


def _llm_hop_overhead(
    ok: list[dict[str, Any]],
    by_tag: dict[str, list[dict[str, Any]]],
    llm_lines: list[dict[str, Any]],
) -> dict[str, Any]:
    """Each LLM call's time as the service logged it minus the simulator's own, by stage."""
    tag_of = {r["run_id"]: r["tag"] for r in ok if r.get("run_id")}
    lines_by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for line in llm_lines:
        if line.get("run_id") in tag_of:
            lines_by_run[line["run_id"]].append(line)
    calls_by_run = {rid: by_tag.get(tag, []) for rid, tag in tag_of.items()}
    hops = analysis.llm_hop_overheads(calls_by_run, lines_by_run)
    every = [v for values in hops.values() for v in values]
    return {
        "all": analysis.summary(every, 1000),
        **{stage: analysis.summary(v, 1000) for stage, v in sorted(hops.items())},
        "matched_calls": len(every),
        "simulator_calls": sum(len(v) for v in calls_by_run.values()),
    }


def _timeline(
    ok: list[dict[str, Any]],
    by_tag: dict[str, list[dict[str, Any]]],
    events: dict[str, list[tuple[str, dict[str, Any]]]],
) -> dict[str, Any]:
    """The time outside the LLM along each run's critical path, by segment."""
    segments: dict[str, list[float]] = defaultdict(list)
    for record in ok:
        line = analysis.timeline(
            record, by_tag.get(record["tag"], []), events.get(record["run_id"], [])
        )
        for key, value in (line or {}).items():
            segments[key].append(value)
    return {key: analysis.summary(segments[key], 1000) for key, _ in analysis.SEGMENTS}


def _summed_buckets(page: dict[str, str], workers: list[str], target: str) -> dict[float, float]:
    """The workers' `podcrew_http_client_hop_overhead_seconds` buckets for one target."""
    total: dict[float, float] = defaultdict(float)
    for worker in workers:
        buckets = analysis.histogram_buckets(
            page.get(worker, ""), "podcrew_http_client_hop_overhead_seconds", target=target
        )
        for bound, count in buckets.items():
            total[bound] += count
    return dict(total)


def internal_hops(
    before: dict[str, str], after: dict[str, str], llm_lines: list[dict[str, Any]]
) -> dict[str, Any]:
    """From the services' own histograms: what the worker measured for its calls to an agent
    minus what the agent measured serving them (the hop: both HTTP stacks and the loopback),
    as means and, per request (the caller's time minus the callee's `Server-Timing`), as
    p50/p95 interpolated in the buckets; and the agent's own time outside its LLM calls."""
    workers = [n for n in after if n.startswith("worker-")]

    def client(target: str, page: dict[str, str]) -> tuple[float, float]:
        sums = [
            analysis.histogram_totals(
                page.get(w, ""), "podcrew_http_client_request_duration_seconds", target=target
            )
            for w in workers
        ]
        return sum(s for s, _ in sums), sum(c for _, c in sums)

    def server(service: str, route: str, page: dict[str, str]) -> tuple[float, float]:
        return analysis.histogram_totals(
            page.get(service, ""),
            "podcrew_http_server_request_duration_seconds",
            method="POST",
            route=route,
        )

    out: dict[str, Any] = {}
    for target, route in (("research-agent", "/v1/research"), ("writer-agent", "/v1/write/stream")):
        c_mean = analysis.mean_delta(client(target, before), client(target, after))
        s_before, s_after = server(target, route, before), server(target, route, after)
        s_mean = analysis.mean_delta(s_before, s_after)
        requests = s_after[1] - s_before[1]
        stage = "research" if target == "research-agent" else "write"
        llm_total = sum(float(ln["latency_s"]) for ln in llm_lines if ln.get("stage") == stage)
        entry: dict[str, Any] = {
            "requests": int(requests),
            "client_mean": None if c_mean is None else round(c_mean * 1000, 3),
            "server_mean": None if s_mean is None else round(s_mean * 1000, 3),
            "hop_overhead_mean": None
            if c_mean is None or s_mean is None
            else round((c_mean - s_mean) * 1000, 3),
        }
        hop_before = _summed_buckets(before, workers, target)
        hop_after = _summed_buckets(after, workers, target)
        p50 = analysis.bucket_quantile(hop_before, hop_after, 0.5)
        p95 = analysis.bucket_quantile(hop_before, hop_after, 0.95)
        entry["hop_overhead_p50"] = None if p50 is None else round(p50 * 1000, 3)
        entry["hop_overhead_p95"] = None if p95 is None else round(p95 * 1000, 3)
        if s_mean is not None and requests > 0:
            entry["agent_time_outside_llm_mean"] = round((s_mean - llm_total / requests) * 1000, 3)
        out[target] = entry
    return out


def podcrew_level(ctx: Context, level: int) -> dict[str, Any]:
    opts, stack = ctx.opts, ctx.stack
    rounds = rounds_for(level, opts)
    log(opts, f"podcrew: {level} concurrent runs x {rounds}")
    ctx.logs.mark()
    metrics_before = scrape(stack)
    redis_before = ctx.redis_used_kib()
    commands_before = ctx.redis_commands()
    job = runs_job(
        "podcrew", stack.config.api_url, level, rounds, f"p{level}x", stagger_s=opts.stagger_s
    )
    measured = measure_load(ctx, podcrew_pids(stack), job)
    redis_growth = ctx.redis_used_kib() - redis_before
    commands = Counter(ctx.redis_commands())
    commands.subtract(commands_before)
    metrics_after = scrape(stack)
    lines = ctx.logs.llm_calls()
    events = {
        r["run_id"]: run_events(ctx.redis, r["run_id"])
        for r in measured.load["runs"]
        if r.get("run_id")
    }
    return level_summary(
        system="podcrew",
        level=level,
        measured=measured,
        python_procs=[n for n in measured.usage.cpu_s if is_python_service(n)],
        llm_lines=lines,
        metrics=(metrics_before, metrics_after),
        events=events,
        redis_growth_kib=redis_growth,
        redis_commands={k: v for k, v in commands.items() if v > 0},
    )


# --- the peers --------------------------------------------------------------------------

# Each peer serves `POST /runs` (the whole pipeline) from one process: the module it runs.
PEERS = {"baseline": "bench.baseline", "langgraph": "bench.peers.langgraph_app"}


class Peer:
    """A peer's process (`system`, one of PEERS): launched early (its start-up may overlap
    the stack's), reused from level to level, and replaced after a duration-limited level,
    whose abandoned runs would otherwise keep it busy."""

    def __init__(self, opts: Options, system: str = "baseline") -> None:
        self.opts = opts
        self.system = system
        self.simulator_url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.fresh = False
        self._log: Any = None

    def launch(self, simulator_url: str) -> None:
        self.stop()
        self.simulator_url = simulator_url
        port = free_port()
        env = {
            **os.environ,
            **{k: v for k, v in stack_env(self.opts).items() if k.startswith("PYTHON")},
        }
        env.pop("PYTHONPATH", None)  # experiments patch podcrew, never a peer
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        argv = [sys.executable, "-m", PEERS[self.system], "--port", str(port)]
        argv += ["--simulator", simulator_url]
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )
        self.url = f"http://{LOOPBACK}:{port}"
        self.fresh = True

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def ready(self, timeout_s: float = 120) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1) as client:
            while True:
                if self.proc.poll() is not None:
                    self._log.seek(0)
                    tail = self._log.read()[-2000:].decode()
                    raise RuntimeError(f"{self.system} exited: {tail}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/healthz").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.system} did not start")
                time.sleep(0.05)

    def prepare(self, simulator_url: str) -> None:
        """Launch it unless it is running, wait until it answers, and after each launch
        warm it up with one run, as podcrew's warm-up does: connections, imports,
        first-call paths."""
        if self.proc is None or self.proc.poll() is not None:
            self.launch(simulator_url)
        self.ready()
        if self.fresh:
            loadgen(runs_job(self.system, self.url, 1, 1, f"{self.system[0]}w", timeout_s=300))
            self.fresh = False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _peer_rounds(level: int, peer: Peer) -> int | None:
    """Runs per user of a peer's level; None: a duration-limited level. The baseline's
    semaphore admits 10 runs at a time, so a level above 10 would take minutes: it runs for
    a window. The LangGraph peer admits every run, so it runs podcrew's rounds."""
    opts = peer.opts
    if peer.system == "langgraph":
        return rounds_for(level, opts)
    if level > 10:
        return None
    return opts.rounds if opts.rounds is not None else (3 if level == 1 else 2)


def peer_level(ctx: Context, level: int, peer: Peer) -> dict[str, Any]:
    """One level against a peer, against the same simulated server."""
    opts, system = ctx.opts, peer.system
    rounds = _peer_rounds(level, peer)
    limited = rounds is None
    log(
        opts,
        f"{system}: {level} concurrent runs, "
        + (f"{opts.baseline_window_s:.0f} s window" if limited else f"x {rounds}"),
    )
    peer.prepare(ctx.stack.config.simulator_url)
    window_s = opts.baseline_window_s if limited else None
    job = runs_job(system, peer.url, level, rounds, f"{system[0]}{level}x", duration_s=window_s)
    measured = measure_load(ctx, {system: peer.pid}, job)
    if limited:  # runs abandoned at the end of the window are still running in there
        peer.stop()
        peer.proc = None
    return level_summary(system=system, level=level, measured=measured, python_procs=[system])


# --- the floor --------------------------------------------------------------------------


def floor_levels(opts: Options) -> list[dict[str, Any]]:
    """The floor (bench/floor.py) at every level, with podcrew's rounds, on its own
    processes and simulator, before podcrew's stack starts: never two stacks at once."""
    log(opts, "floor: starting its gateway and agent")
    with floor.started(opts.latency_s) as processes:
        if opts.warmup > 0:
            concurrency = min(10, opts.warmup)
            users = floor.drive(processes.gateway_url, concurrency, -(-opts.warmup // concurrency))
            floor.run_loop(users)
        out = []
        for level in opts.levels:
            rounds = rounds_for(level, opts)
            log(opts, f"floor: {level} concurrent runs x {rounds}")
            out.append(floor.measure_level(processes, level, rounds))
    return out


# --- many streams -----------------------------------------------------------------------


@dataclass
class StreamsRun:
    """What the load generator saw following every stream, and the api process meanwhile."""

    opened: int
    rss_open_kib: int
    usage: procstat.Usage
    elapsed_s: float
    streams: list[dict[str, Any]]


def stream_test(ctx: Context, count: int) -> dict[str, Any]:
    """`count` SSE subscribers on the one api process, each following its own run from
    `run.queued` to its final event. The workers are paused (SIGSTOP) until every stream is
    open, so all `count` are open at once; then they resume and the runs execute."""
    opts, stack = ctx.opts, ctx.stack
    log(opts, f"streams: {count} concurrent SSE subscribers on one api process")
    api_pid = stack.services["api"].process.pid  # type: ignore[union-attr]
    workers = [
        s.process.pid for n, s in stack.services.items() if n.startswith("worker-") and s.process
    ]
    job = {
        "mode": "streams",
        "url": stack.config.api_url,
        "count": count,
        "prefix": f"s{uuid.uuid4().hex[:6]}",
        "timeout_s": 600,
    }
    settle_s = 1.0 if count >= 100 else 0.1
    rss_idle = procstat.rss_kib(api_pid)
    run = _follow_streams(job, api_pid, workers, settle_s)
    time.sleep(settle_s)
    rss_after = procstat.rss_kib(api_pid)
    return _streams_summary(ctx, count, run, rss_idle, rss_after)


def _follow_streams(
    job: dict[str, Any], api_pid: int, workers: list[int], settle_s: float
) -> StreamsRun:
    """Run the streams job with the workers paused until the load generator says every
    stream is open (`OPEN n`), then resumed; the workers are resumed whatever happens."""
    with _job_files(job) as (path, out):
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        resumed = False
        proc = _start_loadgen(path, subprocess.PIPE)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("OPEN"):
                raise RuntimeError(f"stream test: load generator said {line!r}")
            opened = int(line.split()[1])
            time.sleep(settle_s)  # let the api settle with every stream open and idle
            rss_open = procstat.rss_kib(api_pid)
            sampler = procstat.Sampler({"api": api_pid}).start()
            for pid in workers:
                os.kill(pid, signal.SIGCONT)
            resumed = True
            started = time.monotonic()
            if proc.wait(900) != 0:
                raise RuntimeError("stream test: load generator failed")
            elapsed = time.monotonic() - started
            usage = sampler.stop()
        finally:
            if not resumed:
                for pid in workers:
                    os.kill(pid, signal.SIGCONT)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        streams = orjson.loads(out.read_bytes())["streams"]
    return StreamsRun(opened, rss_open, usage, elapsed, streams)


def _streams_summary(
    ctx: Context, count: int, run: StreamsRun, rss_idle: int, rss_after: int
) -> dict[str, Any]:
    """Each stream checked against its run's events in Redis: complete when it delivered
    every event, in order, up to `run.succeeded`."""
    streams, usage = run.streams, run.usage
    complete = errors = 0
    missing: list[str] = []
    for stream in streams:
        ids = [
            eid.decode()
            for eid, _ in ctx.redis.xrange(f"{KEY_PREFIX}:run:{stream['run_id']}:events")
        ]
        if stream["error"]:
            errors += 1
        if (
            stream["digest"] == analysis.event_digest(ids)
            and stream["final"] == "run.succeeded"
            and not stream["error"]
        ):
            complete += 1
        elif len(missing) < 5:
            missing.append(stream["run_id"])
    events = sum(s["events"] for s in streams)
    closings = Counter(reason for s in streams for reason in s.get("closings", []))
    return {
        "subscribers": count,
        "open_at_once": run.opened,
        "complete": complete,
        "errors": errors,
        # Streams the server ended before the final event, which the subscriber then
        # resumed with Last-Event-ID, as an EventSource does; and the reasons it gave.
        "reconnects": sum(s.get("reconnects", 0) for s in streams),
        "streams_reconnected": sum(1 for s in streams if s.get("reconnects")),
        "closing_reasons": dict(closings),
        "error_examples": sorted({s["error"] for s in streams if s["error"]})[:3],
        "incomplete_examples": missing,
        "events_delivered": events,
        "events_per_stream": round(events / max(1, count), 1),
        "seconds_to_finish": round(run.elapsed_s, 2),
        "api_rss_kib": {
            "idle": rss_idle,
            "all_open": run.rss_open_kib,
            "peak": usage.rss_peak_kib["api"],
            "after": rss_after,
        },
        "api_kib_per_open_stream": round((run.rss_open_kib - rss_idle) / count, 2),
        "api_peak_kib_per_stream": round((usage.rss_peak_kib["api"] - rss_idle) / count, 2),
        "api_cpu_s": round(usage.cpu_s["api"], 3),
    }


# --- the whole run ----------------------------------------------------------------------


@dataclass
class Context:
    opts: Options
    stack: Stack
    sim: httpx.Client
    redis: redis.Redis
    sim_pid: int
    logs: LogTail

    def redis_used_kib(self) -> float:
        return float(self.redis.info("memory")["used_memory"]) / 1024

    def redis_commands(self) -> dict[str, int]:
        """Commands Redis has served since it started, by command (`INFO commandstats`)."""
        stats = self.redis.info("commandstats")
        return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


@contextlib.contextmanager
def connect(opts: Options, stack: Stack) -> Iterator[Context]:
    """The context of a measurement on a started stack: a client of the simulator's call
    log, a Redis client, the services' logs."""
    sim_pid = stack.services["llm-simulator"].process.pid  # type: ignore[union-attr]
    with (
        httpx.Client(base_url=stack.config.simulator_url, timeout=120) as sim,
        redis.Redis.from_url(stack.config.redis_url) as r,
    ):
        yield Context(opts, stack, sim, r, sim_pid, LogTail(stack))


def warm_up(ctx: Context) -> None:
    if ctx.opts.warmup <= 0:
        return
    log(ctx.opts, f"warm-up: {ctx.opts.warmup} runs")
    concurrency = min(10, ctx.opts.warmup)
    runs_per_user = math.ceil(ctx.opts.warmup / concurrency)
    loadgen(runs_job("podcrew", ctx.stack.config.api_url, concurrency, runs_per_user, "w"))


def run(opts: Options) -> dict[str, Any]:
    """The floor at every level; then every level against podcrew, then against each peer,
    then the stream test, on one stack started for the purpose; the results with their
    verdicts on the budgets."""
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": procstat.machine(),
        "config": _config(opts),
        "floor": floor_levels(opts) if opts.floor else None,
        "podcrew": [],
        "baseline": [],
        "langgraph": [],
    }
    log(opts, "starting the stack")
    baseline = Peer(opts, "baseline")
    stack = start_stack(
        opts, on_config=(lambda c: baseline.launch(c.simulator_url)) if opts.baseline else None
    )
    try:
        with connect(opts, stack) as ctx:
            result["stack"] = {"processes": sorted(podcrew_pids(stack)), "env": stack_env(opts)}
            _measure(ctx, baseline, result)
    finally:
        log(opts, "stopping the stack")
        baseline.stop()
        _stop_stack(stack, opts.keep_logs)
    result["finished_at"] = datetime.now(UTC).isoformat()
    result["targets"] = report.targets(result)
    return result


def _config(opts: Options) -> dict[str, Any]:
    return {
        "levels": opts.levels,
        "latency_s": opts.latency_s,
        "workers": opts.workers,
        "warmup_runs": opts.warmup,
        "rounds": {str(n): rounds_for(n, opts) for n in opts.levels},
        "baseline_levels": opts.baseline_levels if opts.baseline else [],
        "baseline_window_s": opts.baseline_window_s,
        "langgraph_levels": (opts.langgraph_levels or opts.levels) if opts.langgraph else [],
        "floor": opts.floor,
        "streams": opts.streams,
        "stagger_s": opts.stagger_s,
        "redis_max_connections": opts.redis_max_connections,
        "extra_env": opts.extra_env or {},
        "python": sys.version.split()[0],
    }


def _measure(ctx: Context, baseline: Peer, result: dict[str, Any]) -> None:
    opts = ctx.opts
    warm_up(ctx)
    for level in opts.levels:
        result["podcrew"].append(podcrew_level(ctx, level))
    if opts.baseline:
        for level in opts.baseline_levels or opts.levels:
            result["baseline"].append(peer_level(ctx, level, baseline))
        baseline.stop()
    if opts.langgraph:
        peer = Peer(opts, "langgraph")
        try:
            for level in opts.langgraph_levels or opts.levels:
                result["langgraph"].append(peer_level(ctx, level, peer))
        finally:
            peer.stop()
    if opts.streams:
        result["streams"] = stream_test(ctx, opts.streams)


def _stop_stack(stack: Stack, keep_logs: Path | None) -> None:
    for name, service in stack.services.items():  # all at once; Redis last, below
        if name != "redis":
            service.signal(signal.SIGTERM)
    stack.stop()
    if keep_logs is not None:
        keep_logs.mkdir(parents=True, exist_ok=True)
        for path in stack.data_dir.glob("*.log"):
            shutil.copy(path, keep_logs / path.name)
    stack.close()


def parse_args(argv: list[str]) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    parser.add_argument("--levels", type=ints, default=[1, 10, 50, 500])
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per LLM call")
    parser.add_argument("--rounds", type=int, default=None, help="runs per virtual user")
    parser.add_argument("--workers", type=int, default=1, help="orchestrator worker processes")
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--baseline-levels", type=ints, default=None)
    parser.add_argument("--baseline-window", type=float, default=20.0)
    parser.add_argument("--no-langgraph", action="store_true", help="skip the LangGraph peer")
    parser.add_argument("--langgraph-levels", type=ints, default=None)
    parser.add_argument(
        "--no-floor", action="store_true", help="skip the floor (the CPU budget: not measured)"
    )
    parser.add_argument("--streams", type=int, default=1000, help="0 to skip the SSE test")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default=None, help="results file name (without .json)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy service logs here")
    parser.add_argument(
        "--redis-max-connections",
        type=int,
        default=None,
        help="pool size of every service's Redis client (via PODCREW_REDIS_URL); "
        "default: as shipped",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="extra stack setting"
    )
    parser.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        metavar="S",
        help="spread the virtual users' first runs over S seconds (default 0: all at once)",
    )
    a = parser.parse_args(argv)
    return Options(
        levels=a.levels,
        latency_s=a.latency,
        rounds=a.rounds,
        workers=a.workers,
        baseline=not a.no_baseline,
        baseline_levels=a.baseline_levels,
        baseline_window_s=a.baseline_window,
        langgraph=not a.no_langgraph,
        langgraph_levels=a.langgraph_levels,
        floor=not a.no_floor,
        streams=a.streams,
        warmup=a.warmup,
        out_dir=a.out,
        name=a.name,
        quiet=a.quiet,
        keep_logs=a.keep_logs,
        redis_max_connections=a.redis_max_connections,
        extra_env=dict(item.split("=", 1) for item in a.env),
        stagger_s=a.stagger,
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(sys.argv[1:] if argv is None else argv)

    def terminate(signum: int, _: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through `finally`: the stack is closed

    signal.signal(signal.SIGTERM, terminate)
    result = run(opts)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    name = opts.name or f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}"
    path = opts.out_dir / f"{name}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(report.render(result))
    print(f"\nJSON: {path}")
    return 0
