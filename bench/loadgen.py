"""The load generator: its own process, so its CPU is never counted as podcrew's.

`python -m bench.loadgen CONFIG_JSON` reads its job from the JSON file, writes the results
to `config["out"]` as JSON, and prints progress lines (`OPEN n` once every stream of a
stream test is open) for the harness on stdout.

Modes:
- `runs`: `concurrency` virtual users, each submitting a run and waiting for its result, one
  after another (a closed loop) for `runs_per_user` runs, or until `duration_s` has passed
  (then runs still in flight are abandoned and not counted). podcrew is asked with
  `POST /v1/runs?wait=…`, which answers when the run is final; the baseline with
  `POST /runs`, which answers with the report.
- `streams`: submit `count` runs, follow each one's `GET /v1/runs/{id}/events` to its final
  event, and record which events arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

# Questions about what the bundled knowledge base (the Python docs) covers. The deterministic
# model plans three sub-questions for each (the default fan-out).
TOPICS = (
    "How do Python generators work?",
    "How do Python decorators work?",
    "How do Python context managers work?",
    "How do Python list comprehensions work?",
    "How do Python exceptions work?",
    "How do Python coroutines work?",
    "How do Python classes work?",
    "How do Python modules work?",
)
TERMINAL_EVENTS = frozenset({"run.succeeded", "run.failed", "run.cancelled"})


def question(tag: str, index: int) -> str:
    """A question no other run asks (no result cache, no coalescing), tagged for the tap."""
    return f"{TOPICS[index % len(TOPICS)]} [bench:{tag}]"


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    return exc.__class__.__name__


async def _one_run(
    client: httpx.AsyncClient, cfg: dict[str, Any], tag: str, index: int
) -> dict[str, Any]:
    body = {"question": question(tag, index)}
    record: dict[str, Any] = {"tag": tag, "run_id": None, "ok": False, "error": None}
    record["submitted_at"] = time.time()
    started = time.perf_counter()
    try:
        if cfg["target"] == "podcrew":
            response = await client.post(
                "/v1/runs", params={"wait": cfg["wait_s"]}, json=body, timeout=cfg["timeout_s"]
            )
        else:
            response = await client.post("/runs", json=body, timeout=cfg["timeout_s"])
        elapsed = time.perf_counter() - started
        record["completed_at"] = time.time()
        record["e2e_s"] = elapsed
        record["http_status"] = response.status_code
        if response.status_code == 200:
            run = orjson.loads(response.content)
            record["run_id"] = run.get("id")
            status = run.get("status", "succeeded")
            record["status"] = status
            record["ok"] = status == "succeeded"
            if not record["ok"]:
                record["error"] = f"run {status}: {(run.get('error') or {}).get('type')}"
        elif response.status_code == 202:  # podcrew: still running after `wait`
            record["run_id"] = orjson.loads(response.content).get("id")
            record["error"] = "timeout"
        else:
            record["error"] = f"http {response.status_code}"
            record["detail"] = response.text[:300]
    except (httpx.HTTPError, OSError) as exc:
        record["e2e_s"] = time.perf_counter() - started
        record["completed_at"] = time.time()
        record["error"] = _error_kind(exc)
    return record


async def _user(
    client: httpx.AsyncClient,
    cfg: dict[str, Any],
    user: int,
    results: list[dict[str, Any]],
    stop_at: float | None,
) -> None:
    concurrency = cfg["concurrency"]
    # Staggered first runs: with a fixed LLM latency, users that start together stay in
    # step, and every process meets their calls all at once, run after run.
    await asyncio.sleep(cfg.get("stagger_s", 0.0) * user / concurrency)
    for turn in range(cfg.get("runs_per_user") or 1_000_000):
        if stop_at is not None and time.monotonic() >= stop_at:
            return
        index = turn * concurrency + user
        results.append(await _one_run(client, cfg, f"{cfg['prefix']}-{index}", index))


async def run_load(cfg: dict[str, Any]) -> dict[str, Any]:
    concurrency = int(cfg["concurrency"])
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    results: list[dict[str, Any]] = []
    duration = cfg.get("duration_s")
    started_wall = time.time()
    started = time.monotonic()
    stop_at = started + duration if duration else None
    # aiohttp's HTTP stack under httpx's API, as podcrew's own client: the load generator
    # shares the 2 cores with what it measures, and httpx's pool cost ~3x the CPU.
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(
        base_url=cfg["url"], limits=limits, timeout=None, transport=transport
    ) as client:
        users = [
            asyncio.create_task(_user(client, cfg, u, results, stop_at)) for u in range(concurrency)
        ]
        if duration:
            # Stop starting runs at `duration_s`; what is still running then is abandoned.
            _, pending = await asyncio.wait(users, timeout=duration)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            results = [r for r in results if r["completed_at"] - started_wall <= duration]
        else:
            await asyncio.gather(*users)
    return {
        "mode": "runs",
        "started_at": started_wall,
        "finished_at": time.time(),
        "duration_limited": bool(duration),
        "window_s": duration,
        "runs": results,
    }


def _digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


MAX_RECONNECTS = 5


class _Subscriber:
    """One run's event stream, read to its final event as an EventSource client does: a
    stream the server ends before the final event (with `stream.closing`, or by closing the
    body) is opened again with `Last-Event-ID`; the reconnects and the reasons the server
    gave are reported. Counts itself in `state["open"]` at its first event (or when it
    gives up without one, so as not to hold up the others) and sets `opened` once every
    subscriber has."""

    def __init__(self, run_id: str, opened: asyncio.Event, state: dict[str, Any]) -> None:
        self.run_id = run_id
        self.opened = opened
        self.state = state
        self.ids: list[str] = []  # in order of arrival
        self.types: list[str] = []
        self.closings: list[str] = []
        self.reconnects = 0
        self.counted = False

    async def follow(self, client: httpx.AsyncClient) -> dict[str, Any]:
        error = None
        try:
            while True:
                await self._read(client)
                if self._final() or self.reconnects >= MAX_RECONNECTS:
                    break
                self.reconnects += 1
        except (httpx.HTTPError, OSError, RuntimeError) as exc:
            error = _error_kind(exc) if not isinstance(exc, RuntimeError) else str(exc)
            error = f"{error}: {exc}"[:300]
        self._count_open()
        return {
            "run_id": self.run_id,
            "events": len(self.ids),
            "digest": _digest(self.ids),
            "final": self.types[-1] if self.types else None,
            "error": error,
            "reconnects": self.reconnects,
            "closings": self.closings,
        }

    async def _read(self, client: httpx.AsyncClient) -> None:
        """One connection, read until the final event or until the server ends it."""
        headers = {"last-event-id": self.ids[-1]} if self.ids else {}
        url = f"/v1/runs/{self.run_id}/events"
        async with client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"http {response.status_code}")
            event_id = event_type = data = None
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    event_id = line[3:].strip()
                elif line.startswith("event:"):
                    event_type = line[6:].strip()
                elif line.startswith("data:"):
                    data = line[5:].strip()
                elif line == "" and event_type is not None:
                    self._received(event_id, event_type, data)
                    if event_type in TERMINAL_EVENTS:
                        return
                    event_id = event_type = data = None

    def _received(self, event_id: str | None, event_type: str, data: str | None) -> None:
        if event_id:
            self.ids.append(event_id)
            self.types.append(event_type)
        elif event_type == "stream.closing":
            self.closings.append(str(orjson.loads(data or "{}").get("reason")))
        self._count_open()

    def _final(self) -> bool:
        return bool(self.types) and self.types[-1] in TERMINAL_EVENTS

    def _count_open(self) -> None:
        if self.counted:
            return
        self.counted = True
        self.state["open"] += 1
        if self.state["open"] >= self.state["count"]:
            self.opened.set()


async def run_streams(cfg: dict[str, Any]) -> dict[str, Any]:
    count = int(cfg["count"])
    limits = httpx.Limits(max_connections=count + 64, max_keepalive_connections=count + 64)
    timeout = httpx.Timeout(cfg["timeout_s"], connect=30.0)
    state = {"open": 0, "count": count}
    opened = asyncio.Event()
    async with httpx.AsyncClient(base_url=cfg["url"], limits=limits, timeout=timeout) as client:
        gate = asyncio.Semaphore(64)

        async def submit(index: int) -> str:
            async with gate:
                response = await client.post(
                    "/v1/runs", json={"question": question(f"{cfg['prefix']}-{index}", index)}
                )
                response.raise_for_status()
                return str(response.json()["id"])

        run_ids = await asyncio.gather(*(submit(i) for i in range(count)))
        followers = [
            asyncio.create_task(_Subscriber(r, opened, state).follow(client)) for r in run_ids
        ]
        await asyncio.wait_for(opened.wait(), cfg["timeout_s"])
        print(f"OPEN {state['open']}", flush=True)
        streams = await asyncio.gather(*followers)
    return {"mode": "streams", "streams": streams}


def main() -> None:
    cfg = json.loads(Path(sys.argv[1]).read_text())
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    job = run_load if cfg["mode"] == "runs" else run_streams
    result = runner(job(cfg))
    Path(cfg["out"]).write_bytes(orjson.dumps(result))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
