"""`python -m bench.ratelimit`: many replicas under one provider rate limit, with and without
podcrew's shared limiter.

Starts the whole stack with four research-agent processes and the writer against the
simulated Messages API, which enforces a requests-per-minute and tokens-per-minute limit per
model (429 with `retry-after` past them), and keeps `--concurrency` runs in flight for
`--seconds`. Then it lets the runs in flight finish and reports, from the simulator's own log
and every process's metrics: the 429s the provider answered, the retries they caused, the
rate at which the binding model's calls went through (past the first `--warmup` seconds), and
how every run ended. Once with the limiter on, once off (`--mode`).

    uv run --frozen python -m bench.ratelimit                 # both modes, a table
    uv run --frozen python -m bench.ratelimit --mode on --json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from podcrew_cli.stack import Stack, StackConfig

BINDING_MODEL = "claude-haiku-4-5"  # plan and research: most of a run's calls
TERMINAL = {"succeeded", "failed", "cancelled", "refused"}


@dataclass
class Outcome:
    """What one mode measured."""

    limiter: bool
    rpm_limit: int
    seconds: float
    calls_ok: int = 0
    provider_429s: int = 0
    retries: int = 0
    calls_per_minute: float = 0.0  # of the binding model, after the warm-up
    runs: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # error or refusal type: count
    unexplained_failures: int = 0  # failed or refused runs without an error type


def _env(limiter: bool, rpm: int, itpm: int, otpm: int) -> dict[str, str]:
    limits = {
        "requests_per_minute": rpm,
        "input_tokens_per_minute": itpm,
        "output_tokens_per_minute": otpm,
    }
    return {
        "PODCREW_SIM_REQUESTS_PER_MINUTE": str(rpm),
        "PODCREW_SIM_INPUT_TOKENS_PER_MINUTE": str(itpm),
        "PODCREW_SIM_OUTPUT_TOKENS_PER_MINUTE": str(otpm),
        "PODCREW_LLM_RATELIMIT_ENABLED": "true" if limiter else "false",
        "PODCREW_LLM_RATELIMIT_DEFAULT": json.dumps(limits),
        # A second of the rate at most in one go: the rate, not a minute's burst, is measured.
        "PODCREW_LLM_RATELIMIT_BURST_S": "1",
    }


def _drive(api_url: str, seconds: float, concurrency: int, deadline_s: float) -> list[Any]:
    """Keep `concurrency` runs in flight for `seconds`; every run's final state."""
    finished: list[Any] = []
    numbers = itertools.count()
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def loop() -> None:
        with httpx.Client(base_url=api_url, timeout=deadline_s + 30) as client:
            while time.monotonic() < end:
                with lock:
                    n = next(numbers)
                body = {
                    # Each question new, so none is answered from the result cache.
                    "question": f"How do Python generators work, case {n}?",
                    "budget": {"deadline_s": deadline_s},
                }
                response = client.post(f"/v1/runs?wait={deadline_s + 5:g}", json=body)
                run = response.json()
                if "id" not in run:  # refused at submission: a problem+json with its reason
                    run = {"status": "refused", "error": {"type": _slug(run, response)}}
                    time.sleep(0.5)
                while run.get("status") not in TERMINAL:
                    time.sleep(0.5)
                    run = client.get(f"/v1/runs/{run['id']}").json()
                with lock:
                    finished.append(run)

    threads = [threading.Thread(target=loop) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return finished


def _slug(problem: dict[str, Any], response: httpx.Response) -> str:
    """A refusal's reason: the problem's type slug, else its HTTP status."""
    kind = str(problem.get("type") or "")
    return kind.rstrip("/").rsplit("/", 1)[-1] or f"http-{response.status_code}"


def _retries(stack: Stack) -> int:
    """LLM retries counted by every process that calls the LLM."""
    total = 0.0
    for name, service in stack.services.items():
        if service.health_url is None or name in ("api", "llm-simulator"):
            continue
        url = urlsplit(service.health_url)
        text = httpx.get(f"{url.scheme}://{url.netloc}/metrics").text
        for family in text_string_to_metric_families(text):
            if family.name == "podcrew_llm_retries":
                total += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return int(total)


def _calls_per_minute(calls: list[dict[str, Any]], warmup_s: float, seconds: float) -> float:
    """Calls of the binding model answered per minute, from the end of the warm-up to the end
    of the load (the first call starts the clock)."""
    times: list[float] = sorted(c["received_at"] for c in calls if c["model"] == BINDING_MODEL)
    if not times or seconds <= warmup_s:
        return 0.0
    start, end = times[0] + warmup_s, times[0] + seconds
    answered = [c for c in calls if c["status"] == 200 and c["model"] == BINDING_MODEL]
    kept = sum(1 for c in answered if start <= c["received_at"] < end)
    return kept / (end - start) * 60


def measure(limiter: bool, args: argparse.Namespace) -> Outcome:
    """Run one mode on a stack of its own."""
    config = StackConfig.on_free_ports(
        llm="simulated",
        research_agents=args.research_agents,
        env=_env(limiter, args.rpm, args.itpm, args.otpm),
    )
    stack = Stack(config)
    try:
        # Five agent processes each index the knowledge base: more than the usual minute
        # on a busy machine.
        stack.start(timeout_s=args.startup)
        started = time.monotonic()
        runs = _drive(config.api_url, args.seconds, args.concurrency, args.deadline)
        calls = list(httpx.get(f"{config.simulator_url}/_sim/calls").json())
        outcome = Outcome(limiter, args.rpm, round(time.monotonic() - started, 1))
        outcome.calls_ok = sum(1 for c in calls if c["status"] == 200)
        outcome.provider_429s = sum(1 for c in calls if c["status"] == 429)
        outcome.retries = _retries(stack)
    finally:
        stack.close()
    outcome.calls_per_minute = round(_calls_per_minute(calls, args.warmup, args.seconds), 1)
    outcome.runs = dict(Counter(r["status"] for r in runs))
    failed = [r for r in runs if r["status"] in ("failed", "refused")]
    outcome.failures = dict(Counter((r.get("error") or {}).get("type", "") for r in failed))
    outcome.unexplained_failures = outcome.failures.pop("", 0)
    return outcome


def _table(outcomes: list[Outcome]) -> str:
    rows = [
        "| limiter | 429s | retries | calls ok | calls/min (limit) | runs | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rows.append(
            f"| {'on' if o.limiter else 'off'} | {o.provider_429s} | {o.retries} | {o.calls_ok} "
            f"| {o.calls_per_minute} ({o.rpm_limit}) | {o.runs} | {o.failures or '-'} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__)
    parser.add_argument("--mode", choices=("on", "off", "both"), default="both")
    parser.add_argument("--rpm", type=int, default=120, help="requests per minute per model")
    parser.add_argument("--itpm", type=int, default=400_000, help="input tokens per minute")
    parser.add_argument("--otpm", type=int, default=80_000, help="output tokens per minute")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long runs are started")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds left out of the rate")
    parser.add_argument("--concurrency", type=int, default=6, help="runs in flight")
    parser.add_argument("--deadline", type=float, default=40.0, help="each run's deadline_s")
    parser.add_argument("--research-agents", type=int, default=4)
    parser.add_argument("--startup", type=float, default=300.0, help="seconds to start")
    parser.add_argument("--json", action="store_true", help="one JSON object per mode")
    args = parser.parse_args(argv)
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.mode]
    outcomes = [measure(limiter, args) for limiter in modes]
    if args.json:
        for outcome in outcomes:
            print(json.dumps(asdict(outcome)))
    else:
        print(_table(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
