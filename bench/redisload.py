"""`python -m bench.redisload`: the Redis commands a podcrew run costs, and how many runs per
second one Redis core sustains with that command mix.

Three steps, all against podcrew as it is on this checkout, never a list of commands written
down by hand:

1. **Commands per run.** A real stack (`podcrew_cli.stack.Stack`, the offline model) runs
   `--runs` runs through the API; `INFO commandstats` and `INFO cpu` of its redis-server
   are read before and after. What an idle stack does over the same time (measured first,
   in an interval with no run: blocked reads timing out, heartbeats, trims, health checks)
   is subtracted, so the figures are what a run adds.
2. **Runs per second per Redis core.** While `--capture-runs` more runs go through the same
   stack, `MONITOR` records every command. That sequence, less the idle share (the same
   subtraction, command by command), is replayed against a redis-server of its own, started
   with the stack's settings (AOF on), by `--procs` client processes of `--lanes` asyncio
   lanes each (redis-py, each captured pipeline or transaction sent as one pipeline, as the
   services send it), with no agent, worker or LLM. Each replay of the capture is made fresh:
   every run id is replaced by a new one, and every stream entry id the capture names is
   replaced by the id Redis gave the replayed XADD. The replay's own commands per run (from
   its redis-server's `INFO commandstats`) are printed beside step 1's, to check the mix.

3. **Runs per second one Redis core sustains, measured.** The Python clients of step 2
   cannot keep redis-server busy on a small machine, so the same template is also rendered
   as raw RESP, `--pipe-runs` runs in all, and fed by `--pipes` parallel `redis-cli --pipe`
   (a C client writing as fast as Redis reads) to a fresh redis-server with the stack's
   settings: Redis' main thread is the bottleneck (its busy share is reported, sampled every
   0.5 s). runs/s = runs replayed / wall time from the first byte to the last reply. Every
   replay has run ids and a tenant of its own; since a pipe never reads a reply, each XADD
   whose id a later command names (the queue entry the worker acknowledges or claims) is
   given an explicit id, chosen ahead and growing, and the later commands name it. Explicit
   ids must grow per stream, so each pipe has its own copy of such a shared stream (the run
   queue, as if partitioned, with its consumer group). Step 2 stays as a cross-check: its
   many small pipelines over many connections are the services' pattern of wake-ups, so its
   CPU per run is the one at moderate load; the pipes batch far more per wake-up.

Approximations of the replay: blocking reads (`XREADGROUP`/`XREAD ... BLOCK`) are sent
without `BLOCK` (under load they return at once anyway); `WAIT` asks for 0 replicas (there
are none); the id of an entry that a Lua script adds is not returned to the client, so a
command naming one (the api's cursor on the finished-runs stream) gets the id of the time
of the lane's previous step, which reads what arrived since; replies never steer the replay
(a refused admission or a taken idempotency key is followed by the commands the capture
had). In the pipes, that cursor reads from the stream's start instead, as many entries
(`COUNT`) as a read of the capture got on average; an id no replayed XADD gives is replaced
by one older than any entry (an acknowledgement of nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import re
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from podcrew_cli.stack import LOOPBACK, Stack, StackConfig
from podcrew_cli.topology import find_redis_cli
from podcrew_core.runtime.auth import hash_key

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent
FINAL = frozenset({"succeeded", "failed", "cancelled"})
_RUN_ID = re.compile(rb"run_[0-9a-f]{32}")
# A stream entry id: milliseconds since the epoch (13 digits until 2286), a sequence number.
_ENTRY_ID = re.compile(rb"\d{13}-\d+")
_DIGITS = re.compile(rb"\d+")
# The tenant of every run on the stack (its API key's): a name found nowhere else, so the
# replay can give each replay a tenant of its own wherever the name appears.
_TENANT = b"redisload-tenant-5e1d"
_API_KEY = "redisload-key"
_NO_LIMITS = {
    "requests_per_minute": 1_000_000,
    "burst": 100_000,
    "concurrent_runs": 100_000,
    "daily_tokens": 10**12,
    "daily_cost_usd": 10**9,
}
_MONITOR_LINE = re.compile(rb"^\+(\d+\.\d+) \[\d+ ([^\]]+)\] (.*)$", re.DOTALL)
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
# Connection set-up and the tool's own reads: not part of a run's work.
_NOT_REPLAYED = frozenset({"MONITOR", "INFO", "SCRIPT", "HELLO", "CLIENT", "AUTH", "SELECT"})
# Commands a client sends back to back in one pipeline reach Redis within microseconds; a
# second round trip of the same client takes longer than this.
_PIPELINE_GAP_S = 0.0002


@dataclass(frozen=True, slots=True)
class Command:
    """One command as MONITOR showed it: server time, client (`ip:port` or `lua`), args."""

    t: float
    client: str
    args: tuple[bytes, ...]

    @property
    def name(self) -> str:
        return self.args[0].decode().upper()


def _unescape(raw: bytes) -> bytes:
    """An argument as MONITOR quotes it (sdscatrepr), back to its bytes."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] != b"\\":
            out += raw[i : i + 1]
            i += 1
        elif raw[i + 1 : i + 2] == b"x":
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out += _ESCAPES.get(raw[i + 1 : i + 2], raw[i + 1 : i + 2])
            i += 2
    return bytes(out)


def parse_monitor_line(line: bytes) -> Command | None:
    """A line of MONITOR's output as a `Command`; None for anything else (`+OK`)."""
    match = _MONITOR_LINE.match(line.rstrip(b"\r\n"))
    if match is None:
        return None
    args = tuple(_unescape(a) for a in _QUOTED.findall(match.group(3)))
    return Command(float(match.group(1)), match.group(2).decode(), args) if args else None


class Monitor:
    """`MONITOR` on a connection of its own, every command kept, for as long as it is open."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.commands: list[Command] = []
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Monitor:
        # A large line limit: a run record or a report is one argument of one line.
        reader, self._writer = await asyncio.open_connection(LOOPBACK, self.port, limit=1 << 26)
        self._writer.write(b"MONITOR\r\n")
        await self._writer.drain()
        if not (await reader.readline()).startswith(b"+OK"):
            raise RuntimeError("redis-server refused MONITOR")
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            command = parse_monitor_line(line)
            if command is not None:
                self.commands.append(command)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # the lines already sent reach the reader
        assert self._writer is not None
        assert self._task is not None
        self._writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    def scripts(self) -> list[bytes]:
        """The Lua sources the services loaded (`SCRIPT LOAD`) while this was open."""
        return [
            c.args[2]
            for c in self.commands
            if c.name == "SCRIPT" and len(c.args) == 3 and c.args[1].upper() == b"LOAD"
        ]


# ---- step 1: commands and CPU per run on a real stack ----


@dataclass(frozen=True, slots=True)
class Window:
    """What redis-server did over an interval: seconds, calls by command, CPU seconds (the
    whole process, and its main thread, the one that executes commands)."""

    seconds: float
    calls: dict[str, int]
    cpu_s: float
    main_cpu_s: float


async def _counters(redis: Redis) -> tuple[float, dict[str, int], float, float]:
    info: Any = await redis.execute_command("INFO", "cpu", "commandstats")
    calls = {
        key.removeprefix("cmdstat_"): int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_")
    }
    cpu = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    main = float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return time.monotonic(), calls, cpu, main


async def measure(redis: Redis, work: Awaitable[T]) -> tuple[Window, T]:
    """Redis' counters over `work`, and what it returned. The INFO that opens the window is
    counted in it (the one that closes it is not): it is taken back out."""
    t0, calls0, cpu0, main0 = await _counters(redis)
    result = await work
    t1, calls1, cpu1, main1 = await _counters(redis)
    calls = {name: n - calls0.get(name, 0) for name, n in calls1.items()}
    calls["info"] -= 1
    window = Window(t1 - t0, {k: v for k, v in calls.items() if v}, cpu1 - cpu0, main1 - main0)
    return window, result


def per_run(busy: Window, idle: Window, runs: int) -> dict[str, Any]:
    """`busy` less what `idle` does in as much time, divided by `runs`."""
    scale = busy.seconds / idle.seconds
    commands = {
        name: round(max(0.0, n - idle.calls.get(name, 0) * scale) / runs, 2)
        for name, n in sorted(busy.calls.items())
    }
    commands = {name: n for name, n in commands.items() if n > 0}
    return {
        "commands_per_run": commands,
        "commands_per_run_total": round(sum(commands.values()), 1),
        "redis_cpu_ms_per_run": round((busy.cpu_s - idle.cpu_s * scale) / runs * 1e3, 3),
        "redis_main_thread_cpu_ms_per_run": round(
            (busy.main_cpu_s - idle.main_cpu_s * scale) / runs * 1e3, 3
        ),
    }


async def drive(api_url: str, runs: int, concurrency: int, tag: str) -> int:
    """Submit `runs` runs with distinct questions, `concurrency` at a time, each waited for
    until it is final; returns how many succeeded."""
    from bench.loadgen import question

    pending = iter(range(runs))
    succeeded = 0

    async def lane(client: httpx.AsyncClient) -> None:
        nonlocal succeeded
        for index in pending:
            # A question no other run asks: no run is answered from the result cache.
            body = {"question": question(f"{tag}-{index}", index)}
            reply = await client.post("/v1/runs", params={"wait": 120}, json=body)
            if reply.status_code not in (200, 202):
                raise RuntimeError(f"submission refused: {reply.status_code} {reply.text}")
            run = reply.json()
            while run.get("status") not in FINAL:
                await asyncio.sleep(0.2)
                run = (await client.get(f"/v1/runs/{run['id']}")).json()
            succeeded += run["status"] == "succeeded"

    auth = {"authorization": f"Bearer {_API_KEY}"}
    async with httpx.AsyncClient(base_url=api_url, headers=auth, timeout=180.0) as client:
        await asyncio.gather(*(lane(client) for _ in range(concurrency)))
    return succeeded


async def _settled(coro: Awaitable[int], settle_s: float) -> int:
    """`coro`, then a pause for what a run's end sets off (trims, acknowledgements)."""
    result = await coro
    await asyncio.sleep(settle_s)
    return result


@dataclass(slots=True)
class Capture:
    """What MONITOR saw while the stack ran `runs` runs (`busy`, server time) after an idle
    interval (`idle`), and the Lua sources the services loaded."""

    commands: list[Command]
    idle: tuple[float, float]
    busy: tuple[float, float]
    runs: int
    scripts: list[bytes] = field(default_factory=list)


SETTLE_S = 1.0  # after the last run: its acknowledgement, the trims it sets off


async def _until_up(redis: Redis) -> None:
    for _ in range(200):
        try:
            await redis.ping()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise TimeoutError("redis-server did not start")


async def _on_stack(stack: Stack, opts: argparse.Namespace) -> tuple[dict[str, Any], Capture]:
    config = stack.config
    stack.services["redis"].start()
    redis = Redis(host=LOOPBACK, port=config.redis_port)
    try:
        await _until_up(redis)
        # MONITOR from before the services start, so it sees every script they load.
        async with Monitor(config.redis_port) as boot:
            rest = [s for name, s in stack.services.items() if name != "redis"]
            for service in rest:
                service.start()
            await asyncio.to_thread(stack.wait_ready, rest)
            await drive(config.api_url, opts.warmup, opts.concurrency, "warmup")
        # No MONITOR while counting: it costs Redis CPU on every command.
        idle, _ = await measure(redis, asyncio.sleep(opts.idle))
        work = _settled(drive(config.api_url, opts.runs, opts.concurrency, "runs"), SETTLE_S)
        busy, succeeded = await measure(redis, work)
        async with Monitor(config.redis_port) as monitor:
            t0 = time.time()
            await asyncio.sleep(opts.idle)
            t1 = time.time()
            work = drive(config.api_url, opts.capture_runs, opts.concurrency, "capture")
            await _settled(work, SETTLE_S)
            t2 = time.time()
    finally:
        await redis.aclose()
    figures = {
        "runs": opts.runs,
        "succeeded": succeeded,
        "seconds": round(busy.seconds, 2),
        "idle_seconds": round(idle.seconds, 2),
        "idle_commands_per_s": {k: round(v / idle.seconds, 2) for k, v in idle.calls.items()},
        "idle_redis_cpu_ms_per_s": round(idle.cpu_s / idle.seconds * 1e3, 3),
        **per_run(busy, idle, opts.runs),
    }
    capture = Capture(monitor.commands, (t0, t1), (t1, t2), opts.capture_runs)
    capture.scripts = boot.scripts() + monitor.scripts()
    return figures, capture


async def run_stack(opts: argparse.Namespace) -> tuple[dict[str, Any], Capture]:
    """Step 1 on a stack of its own (offline model, `opts.latency` s per LLM call)."""
    key = {"tenant": _TENANT.decode(), "sha256": hash_key(_API_KEY)}
    env = {
        "PODCREW_LLM_OFFLINE_LATENCY_S": str(opts.latency),
        "PODCREW_ORCHESTRATOR_API_KEYS": json.dumps([key]),
        # Limits no run here reaches: every submission is admitted, as in a sized deployment.
        "PODCREW_ORCHESTRATOR_TENANT_LIMITS": json.dumps({_TENANT.decode(): _NO_LIMITS}),
    }
    stack = Stack(StackConfig.on_free_ports(env=env))
    try:
        return await _on_stack(stack, opts)
    finally:
        await asyncio.to_thread(stack.close)


# ---- step 2: the captured sequence as a replayable template ----


def _signature(args: Sequence[bytes]) -> tuple[bytes, ...]:
    """A command with its run ids, entry ids and numbers blanked: what an idle stack repeats."""
    return tuple(
        _DIGITS.sub(b"#", _ENTRY_ID.sub(b"<id>", _RUN_ID.sub(b"<run>", a[:80]))) for a in args
    )


def without_idle(busy: list[Command], idle: list[Command], idle_s: float) -> list[int]:
    """The indices of `busy` that remain once, for every command an idle stack repeats, as
    many of its instances as the idle stack sends in as much time are taken out (spread
    evenly over the interval). Transactions' brackets stay, so none is left open."""
    if not busy or idle_s <= 0:
        return list(range(len(busy)))
    busy_s = busy[-1].t - busy[0].t
    rates = Counter(_signature(c.args) for c in idle if c.client != "lua")
    where: defaultdict[tuple[bytes, ...], list[int]] = defaultdict(list)
    for index, command in enumerate(busy):
        if command.client != "lua" and command.name not in ("MULTI", "EXEC", "DISCARD"):
            where[_signature(command.args)].append(index)
    dropped: set[int] = set()
    for signature, count in rates.items():
        found = where.get(signature, [])
        drop = min(len(found), round(count / idle_s * busy_s))
        dropped.update(found[int(i * len(found) / drop)] for i in range(drop))
    return [i for i in range(len(busy)) if i not in dropped]


def _xadd_id_at(args: Sequence[bytes]) -> int:
    """Where XADD's id (`*` or explicit) is among its arguments."""
    i = 2
    if args[i].upper() == b"NOMKSTREAM":
        i += 1
    if args[i].upper() in (b"MAXLEN", b"MINID"):
        i += 1
        if args[i] in (b"=", b"~"):
            i += 1
        i += 1
        if args[i].upper() == b"LIMIT":
            i += 2
    return i


def named_ids(commands: Iterable[Command]) -> set[tuple[bytes, bytes]]:
    """(stream, entry id) of every id a command other than XADD names."""
    named: set[tuple[bytes, bytes]] = set()
    for command in commands:
        args = command.args
        if command.name in ("XREAD", "XREADGROUP"):
            after = args[[a.upper() for a in args].index(b"STREAMS") + 1 :]
            half = len(after) // 2
            named.update(zip(after[:half], after[half:], strict=True))
        elif command.name != "XADD" and command.name.startswith("X"):
            named.update((args[1], a) for a in args[2:] if _ENTRY_ID.fullmatch(a))
    return {(key, eid) for key, eid in named if _ENTRY_ID.fullmatch(eid)}


def created_ids(commands: Sequence[Command]) -> dict[int, bytes]:
    """The entry id each `XADD ... *` of the capture got, by its index, for those a later
    command names: Redis' own rule (the millisecond of the command, the next sequence number
    within one), then moved onto a named id of the same stream within 2 ms (MONITOR's clock
    is read after the command, Redis' own during it)."""
    created: dict[int, tuple[bytes, bytes]] = {}
    last: dict[bytes, tuple[int, int]] = {}
    for index, command in enumerate(commands):
        if command.name != "XADD" or command.args[_xadd_id_at(command.args)] != b"*":
            continue
        ms, key = int(command.t * 1000), command.args[1]
        prev = last.get(key)
        last[key] = (ms, 0) if prev is None or ms > prev[0] else (prev[0], prev[1] + 1)
        created[index] = (key, b"%d-%d" % last[key])
    named = named_ids(commands)
    free = {i: pair for i, pair in created.items() if pair not in named}
    for key, eid in sorted(named - set(created.values())):
        ms, seq = (int(part) for part in eid.split(b"-"))
        for i, (mine_key, mine) in free.items():
            mine_ms, mine_seq = (int(part) for part in mine.split(b"-"))
            if mine_key == key and mine_seq == seq and abs(mine_ms - ms) <= 2:
                created[i] = (key, eid)
                del free[i]
                break
    return {i: eid for i, (key, eid) in created.items() if (key, eid) in named}


@dataclass(frozen=True, slots=True)
class Step:
    """One pipeline of the template, as one client sent it: its commands; which of their
    arguments name a run or an entry (rewritten on every replay); and, for each XADD whose id
    a later command names, where its reply is (index among the pipeline's replies, index in
    EXEC's array or -1) and the id it had in the capture."""

    commands: tuple[tuple[bytes, ...], ...]
    rewrite: tuple[tuple[int, ...], ...]
    replies: tuple[tuple[int, int, bytes], ...]


@dataclass(frozen=True, slots=True)
class Template:
    runs: int
    steps: tuple[Step, ...]
    scripts: tuple[bytes, ...]
    groups: tuple[tuple[bytes, bytes], ...]
    # For every stream a read names an entry of that no replayed XADD adds (a script adds
    # them): how many entries the stream got per read in the capture.
    entries_per_read: tuple[tuple[bytes, int], ...] = ()


def _replayable(args: tuple[bytes, ...]) -> tuple[bytes, ...]:
    """Blocking reads without BLOCK, WAIT for no replica: nothing waits in the replay."""
    name = args[0].upper()
    if name in (b"XREAD", b"XREADGROUP"):
        upper = [a.upper() for a in args]
        if b"BLOCK" in upper:
            at = upper.index(b"BLOCK")
            return args[:at] + args[at + 2 :]
    if name == b"WAIT":
        return (args[0], b"0", b"0")
    return args


def _rewritten(args: Sequence[bytes]) -> tuple[int, ...]:
    return tuple(
        i for i, a in enumerate(args) if b"run_" in a or _TENANT in a or _ENTRY_ID.fullmatch(a)
    )


def _pipelines(rows: Iterable[tuple[Command, bytes | None]]) -> list[Step]:
    steps: list[Step] = []
    current: list[tuple[bytes, ...]] = []
    replies: list[tuple[int, int, bytes]] = []
    queued: list[tuple[int, bytes]] | None = None  # XADDs of an open MULTI: (position, id)
    position, client, last_t = 0, "", 0.0
    for command, created in rows:
        joined = command.client == client and (
            queued is not None or command.t - last_t <= _PIPELINE_GAP_S
        )
        if not joined and current:
            steps.append(Step(tuple(current), tuple(map(_rewritten, current)), tuple(replies)))
            current, replies = [], []
        client, last_t = command.client, command.t
        if command.name == "MULTI":
            queued, position = [], 0
        elif command.name in ("EXEC", "DISCARD") and queued is not None:
            replies += [(len(current), k, eid) for k, eid in queued]
            queued = None
        elif queued is not None:
            queued += [(position, created)] if created else []
            position += 1
        elif created:
            replies.append((len(current), -1, created))
        current.append(_replayable(command.args))
    if queued is not None:  # the capture ended inside a transaction: leave it out
        current = current[: len(current) - position - 1]
    if current:
        steps.append(Step(tuple(current), tuple(map(_rewritten, current)), tuple(replies)))
    return steps


def _groups(steps: Iterable[Step]) -> set[tuple[bytes, bytes]]:
    """(stream, group) of every consumer group the template reads or acknowledges in."""
    groups: set[tuple[bytes, bytes]] = set()
    for step in steps:
        for args in step.commands:
            name = args[0].upper()
            if name == b"XREADGROUP":
                upper = [a.upper() for a in args]
                keys = args[upper.index(b"STREAMS") + 1 :]
                groups.update((key, args[2]) for key in keys[: len(keys) // 2])
            elif name in (b"XACK", b"XCLAIM", b"XAUTOCLAIM", b"XPENDING"):
                groups.add((args[1], args[2]))
    return groups


def build_template(capture: Capture) -> Template:
    """The capture's busy interval, less the idle share, as pipelines to replay."""
    busy = [c for c in capture.commands if capture.busy[0] <= c.t <= capture.busy[1]]
    idle = [c for c in capture.commands if capture.idle[0] <= c.t < capture.idle[1]]
    created = created_ids(busy)
    kept = without_idle(busy, idle, capture.idle[1] - capture.idle[0])
    rows = [
        (busy[i], created.get(i))
        for i in kept
        if busy[i].client != "lua" and busy[i].name not in _NOT_REPLAYED
    ]
    steps = _pipelines(rows)
    return Template(
        capture.runs,
        tuple(steps),
        tuple(dict.fromkeys(capture.scripts)),
        tuple(_groups(steps)),
        _entries_per_read(busy, steps),
    )


def _entries_per_read(
    busy: Sequence[Command], steps: Iterable[Step]
) -> tuple[tuple[bytes, int], ...]:
    """Entries added to each stream that an XREAD names by id, per XREAD of it."""
    reads: Counter[bytes] = Counter()
    for step in steps:
        for args in step.commands:
            if args[0].upper() == b"XREAD":
                after = args[[a.upper() for a in args].index(b"STREAMS") + 1 :]
                reads.update(after[: len(after) // 2])
    added = Counter(c.args[1] for c in busy if c.name == "XADD" and c.args[1] in reads)
    return tuple((key, max(1, round(added[key] / n))) for key, n in sorted(reads.items()))


# ---- step 2: the replay ----


class _Fresh:
    """One replay of the template: a new id for every run, a new tenant (whose admission
    then goes as it went in the capture), and the ids Redis gave its XADDs."""

    def __init__(self) -> None:
        self.runs: dict[bytes, bytes] = {}
        self.tenant = b"t" + uuid.uuid4().hex.encode()
        self.ids: dict[bytes, bytes] = {}
        self.now = b"0-0"  # an entry id of the time of the previous step

    def _run(self, match: re.Match[bytes]) -> bytes:
        return self.runs.setdefault(match.group(), b"run_" + uuid.uuid4().hex.encode())

    def args(self, args: tuple[bytes, ...], at: tuple[int, ...]) -> tuple[bytes, ...]:
        if not at:
            return args
        out = list(args)
        for i in at:
            if _ENTRY_ID.fullmatch(out[i]):
                out[i] = self.ids.get(out[i], self.now)
            else:
                out[i] = _RUN_ID.sub(self._run, out[i]).replace(_TENANT, self.tenant)
        return tuple(out)


async def _send(redis: Redis, step: Step, fresh: _Fresh) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for args, at in zip(step.commands, step.rewrite, strict=True):
            pipe.execute_command(*fresh.args(args, at))
        replies = await pipe.execute(raise_on_error=False)
    for index, inner, captured in step.replies:
        reply = replies[index] if inner < 0 else replies[index][inner]
        if isinstance(reply, bytes):
            fresh.ids[captured] = reply
    fresh.now = b"%d-0" % int(time.time() * 1000)


async def _replay(port: int, template: Template, lanes: int, start: float, end: float) -> int:
    redis = Redis(host=LOOPBACK, port=port, max_connections=lanes + 1)
    # Replies are only read for the ids XADD returns: no parsing ("QUEUED" is no integer).
    redis.response_callbacks.clear()
    await asyncio.sleep(max(0.0, start - time.time()))

    async def lane() -> int:
        done = 0
        while not done or time.time() < end:  # at least one replay, however late
            fresh = _Fresh()
            for step in template.steps:
                await _send(redis, step, fresh)
            done += 1
        return done

    try:
        return sum(await asyncio.gather(*(lane() for _ in range(lanes))))
    finally:
        await redis.aclose()


def replay_process(port: int, template: Template, lanes: int, start: float, end: float) -> int:
    """One client process of the replay: `lanes` lanes from `start` until `end` (wall clock),
    each replaying the whole template again and again; returns the replays done."""
    return asyncio.run(_replay(port, template, lanes, start, end))


async def _prepare(redis: Redis, template: Template, suffixes: Sequence[bytes] = ()) -> None:
    """The scripts loaded and the consumer groups created, as the services do at start; a
    shared stream renamed per pipe (`suffixes`) gets its group under every name."""
    for script in template.scripts:
        await redis.script_load(script)
    renamed = _queues(template)
    for stream, group in template.groups:
        names = [stream, *(stream + s for s in suffixes if stream in renamed)]
        for name in names:
            try:
                await redis.xgroup_create(name, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise


STARTUP_S = 3.0  # for the client processes to start and connect before the clock runs


async def run_replay(template: Template, opts: argparse.Namespace) -> dict[str, Any]:
    """Step 2: the template replayed on a redis-server started as the stack starts it."""
    stack = Stack(StackConfig.on_free_ports())  # only its redis-server is started
    port = stack.config.redis_port
    stack.services["redis"].start()
    redis = Redis(host=LOOPBACK, port=port)
    try:
        await _until_up(redis)
        await _prepare(redis, template)
        start = time.time() + STARTUP_S
        loop = asyncio.get_running_loop()
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(opts.procs, mp_context=spawn) as pool:
            done = [
                loop.run_in_executor(
                    pool, replay_process, port, template, opts.lanes, start, start + opts.duration
                )
                for _ in range(opts.procs)
            ]
            await asyncio.sleep(max(0.0, start - time.time()))
            window, replays = await measure(redis, asyncio.gather(*done))
    finally:
        await redis.aclose()
        await asyncio.to_thread(stack.close)
    runs = sum(replays) * template.runs
    return _replay_figures(window, runs, opts)


def _replay_figures(window: Window, runs: int, opts: argparse.Namespace) -> dict[str, Any]:
    commands = {k: round(n / runs, 2) for k, n in sorted(window.calls.items())}
    return {
        "procs": opts.procs,
        "lanes_per_proc": opts.lanes,
        "runs": runs,
        "seconds": round(window.seconds, 2),
        "runs_per_s": round(runs / window.seconds, 1),
        "commands_per_run": commands,
        "commands_per_run_total": round(sum(commands.values()), 1),
        "redis_cpu_ms_per_run": round(window.cpu_s / runs * 1e3, 3),
        "redis_main_thread_cpu_ms_per_run": round(window.main_cpu_s / runs * 1e3, 3),
        "redis_main_thread_busy": round(window.main_cpu_s / window.seconds, 3),
        # What one core would sustain with the main thread busy all the time: the measured
        # rate when it is (the main thread executes every command), else the extrapolation.
        "runs_per_s_per_core": round(runs / window.main_cpu_s, 1),
    }


# ---- step 3: the saturating replay, raw RESP through redis-cli --pipe ----

# Run ids, tenants and explicit entry ids are rendered at fixed lengths, so a command's RESP
# (every argument's length) is computed once for the whole replay.
_SLOT = re.compile(rb"run_[0-9a-f]{32}|" + re.escape(_TENANT))
_ID_FALLBACK = b"1000000000000-0"  # an id older than any: what an entry never added gets
Part = bytes | tuple[str, bytes]


def _arg_parts(arg: bytes) -> list[Part]:
    """An argument as literal bytes and slots: `("run", captured id)`, `("tenant", b"")`."""
    parts: list[Part] = []
    at = 0
    for match in _SLOT.finditer(arg):
        kind = "run" if match.group().startswith(b"run_") else "tenant"
        parts += [arg[at : match.start()], (kind, match.group())]
        at = match.end()
    parts.append(arg[at:])
    return parts


def _created_at(step: Step) -> dict[int, bytes]:
    """The index in `step` of each XADD whose id a later command names, and that id."""
    out: dict[int, bytes] = {}
    for at, inner, eid in step.replies:
        if inner < 0:
            out[at] = eid
        else:  # the inner-th command of the transaction that the EXEC at `at` closes
            multi = max(i for i in range(at) if step.commands[i][0].upper() == b"MULTI")
            out[multi + 1 + inner] = eid
    return out


def _from_start(
    args: tuple[bytes, ...], known: set[bytes], per_read: dict[bytes, int]
) -> tuple[bytes, ...]:
    """An XREAD whose cursor names an entry a script added (its id never reaches a client):
    from the stream's start, as many entries as a read got in the capture."""
    upper = [a.upper() for a in args]
    at = upper.index(b"STREAMS") + 1
    half = (len(args) - at) // 2
    keys, ids = args[at : at + half], args[at + half :]
    if all(i in known or not _ENTRY_ID.fullmatch(i) for i in ids):
        return args
    head = list(args[:at])
    count = b"%d" % max(per_read.get(key, 1) for key in keys)
    if b"COUNT" in upper:
        head[upper.index(b"COUNT") + 1] = count
    else:
        head[1:1] = [b"COUNT", count]
    return (*head, *keys, *(i if i in known or not _ENTRY_ID.fullmatch(i) else b"0-0" for i in ids))


def _command_parts(
    args: tuple[bytes, ...], created: bytes | None, known: set[bytes], per_read: dict[bytes, int]
) -> list[Part]:
    """One command as RESP, literal bytes and slots (`("new", id)`: XADD's explicit id)."""
    if args[0].upper() == b"XREAD":
        args = _from_start(args, known, per_read)
    lengths = {
        "run": len(b"run_") + 32,
        "tenant": len(_TENANT),
        "new": len(_ID_FALLBACK),
        "id": len(_ID_FALLBACK),
    }
    new_at = _xadd_id_at(args) if created is not None else -1
    parts: list[Part] = [b"*%d\r\n" % len(args)]
    for i, arg in enumerate(args):
        if i == new_at:
            arg_parts: list[Part] = [("new", created or b"")]
        elif _ENTRY_ID.fullmatch(arg):
            arg_parts = [("id", arg) if arg in known else _ID_FALLBACK]
        else:
            arg_parts = _arg_parts(arg)
        size = sum(len(p) if isinstance(p, bytes) else lengths[p[0]] for p in arg_parts)
        parts += [b"$%d\r\n" % size, *arg_parts, b"\r\n"]
    return parts


def _queues(template: Template) -> set[bytes]:
    """Streams a replayed XADD adds to with an id chosen ahead, shared by all runs."""
    return {
        step.commands[index][1]
        for step in template.steps
        for index in _created_at(step)
        if not _SLOT.search(step.commands[index][1])
    }


def blueprint(template: Template, suffix: bytes) -> list[Part]:
    """The template as RESP with slots, the shared streams that get ids chosen ahead renamed
    with `suffix` (explicit ids must grow per stream: each `redis-cli --pipe` has its own)."""
    rename = {key: key + suffix for key in _queues(template)}
    known = {eid for step in template.steps for _, _, eid in step.replies}
    per_read = dict(template.entries_per_read)
    parts: list[Part] = []
    for step in template.steps:
        created = _created_at(step)
        for index, args in enumerate(step.commands):
            renamed = tuple(rename.get(a, a) for a in args)
            parts += _command_parts(renamed, created.get(index), known, per_read)
    merged: list[Part] = []
    for part in parts:
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        elif part != b"":
            merged.append(part)
    return merged


def render(parts: Sequence[Part], pipe: int, replays: int, base_ms: int, out: BinaryIO) -> None:
    """`replays` replays of the blueprint to `out`, each with run ids and a tenant of its
    own, and XADD ids chosen ahead: one past the other from `base_ms`, so they grow."""
    serial = base_ms
    for replay in range(replays):
        runs: dict[bytes, bytes] = {}
        ids: dict[bytes, bytes] = {}
        tenant = b"t%04x%016x" % (pipe, replay)
        chunk: list[bytes] = []
        for part in parts:
            if isinstance(part, bytes):
                chunk.append(part)
                continue
            kind, captured = part
            if kind == "run":
                new = runs.get(captured) or runs.setdefault(
                    captured, b"run_%08x%08x%016x" % (pipe, replay, len(runs))
                )
            elif kind == "tenant":
                new = tenant
            elif kind == "new":
                serial += 1
                new = ids[captured] = b"%d-0" % serial
            else:
                new = ids.get(captured, _ID_FALLBACK)
            chunk.append(new)
        out.write(b"".join(chunk))


_PIPE_DONE = re.compile(rb"errors: (\d+), replies: (\d+)")


async def _feed(port: int, path: Path) -> tuple[int, int, list[str]]:
    """`redis-cli --pipe < path`: its errors, its replies, its first error lines."""
    with path.open("rb") as stdin:
        cli = await asyncio.create_subprocess_exec(
            find_redis_cli(),
            "-h",
            LOOPBACK,
            "-p",
            str(port),
            "--pipe",
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await cli.communicate()
    done = _PIPE_DONE.search(output)
    if done is None:
        raise RuntimeError(f"redis-cli --pipe ended without its summary: {output[-500:]!r}")
    lines = [line.decode(errors="replace") for line in output.splitlines()]
    errors = [line for line in lines if line.startswith(("ERR", "WRONG", "NOSCRIPT", "-"))]
    return int(done.group(1)), int(done.group(2)), errors[:5]


async def _busy_samples(redis: Redis, every_s: float, into: list[float]) -> None:
    """Redis' main thread's share of each `every_s` interval, until cancelled."""
    _, _, _, last = await _counters(redis)
    while True:
        await asyncio.sleep(every_s)
        _, _, _, now = await _counters(redis)
        into.append(round((now - last) / every_s, 3))
        last = now


def _run_queue_s(pid: int) -> float:
    """Seconds the main thread of process `pid` has spent runnable, waiting for a core
    (`/proc/<pid>/task/<pid>/schedstat`: run time, run-queue time, in ns)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
        return int(f.read().split()[1]) / 1e9


async def _pending(redis: Redis, template: Template, pipes: int) -> int:
    queues = _queues(template)
    pending = 0
    for stream, group in template.groups:
        for name in (stream + b":%d" % pipe for pipe in range(pipes) if stream in queues):
            pending += int((await redis.xpending(name, group))["pending"])
    return pending


async def run_pipes(template: Template, opts: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Step 3: the template rendered as RESP, `opts.pipe_runs` runs over `opts.pipes`
    parallel `redis-cli --pipe`, against a redis-server started as the stack starts it."""
    replays = max(1, -(-opts.pipe_runs // (template.runs * opts.pipes)))
    base_ms = int(time.time() * 1000)
    files = []
    for pipe in range(opts.pipes):
        files.append(tmp / f"pipe-{pipe}.resp")
        with files[-1].open("wb") as out:
            render(blueprint(template, b":%d" % pipe), pipe, replays, base_ms, out)
    stack = Stack(StackConfig.on_free_ports())  # only its redis-server is started
    port = stack.config.redis_port
    stack.services["redis"].start()
    redis = Redis(host=LOOPBACK, port=port)
    samples: list[float] = []
    try:
        await _until_up(redis)
        await _prepare(redis, template, [b":%d" % pipe for pipe in range(opts.pipes)])
        sampler = asyncio.create_task(_busy_samples(redis, 0.5, samples))
        process = stack.services["redis"].process
        assert process is not None
        waited = _run_queue_s(process.pid)
        window, fed = await measure(redis, asyncio.gather(*(_feed(port, f) for f in files)))
        waited = _run_queue_s(process.pid) - waited
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        pending = await _pending(redis, template, opts.pipes)
    finally:
        await redis.aclose()
        await asyncio.to_thread(stack.close)
    runs = replays * opts.pipes * template.runs
    for own in ("info", "echo", "hello"):  # the sampler's, and redis-cli's own
        window.calls.pop(own, None)
    figures = _replay_figures(window, runs, opts)
    del figures["procs"], figures["lanes_per_proc"]
    return {
        "pipes": opts.pipes,
        **figures,
        # The share of the window the main thread was ready to run but had no core (other
        # work on the machine, the pipes themselves): busy + this ~ 1 when Redis was the
        # bottleneck throughout.
        "redis_main_thread_waiting_for_cpu": round(waited / window.seconds, 3),
        "busy_samples": samples,
        "mb_per_run": round(sum(f.stat().st_size for f in files) / runs / 1e6, 4),
        # Entries of the shared queues read and not acknowledged at the end: ~0 when every
        # XACK named the id its run's XADD was given.
        "queue_pending_after": pending,
        "errors": sum(e for e, _, _ in fed),
        "error_lines": [line for _, _, lines in fed for line in lines][:5],
    }


# ---- the report ----


def markdown(result: dict[str, Any]) -> str:
    """Commands per run by command, on the stack and in both replays, and the capacity."""
    stack, replay, pipe = result["stack"], result["replay"], result["pipe"]
    columns = (stack, replay, pipe)
    names = sorted(set().union(*(c["commands_per_run"] for c in columns)))

    def row(label: str, values: Iterable[object]) -> str:
        return f"| {label} | " + " | ".join(str(v) for v in values) + " |"

    lines = [
        "| command | per run, stack | per run, replay | per run, pipe |",
        "|---|---:|---:|---:|",
        *(row(name, (c["commands_per_run"].get(name, 0) for c in columns)) for name in names),
        row("**total**", (f"**{c['commands_per_run_total']}**" for c in columns)),
        row(
            "Redis CPU ms per run (main thread)",
            (
                f"{c['redis_cpu_ms_per_run']} ({c['redis_main_thread_cpu_ms_per_run']})"
                for c in columns
            ),
        ),
        "",
        f"Saturated ({pipe['pipes']} parallel `redis-cli --pipe`): {pipe['runs']} runs in"
        f" {pipe['seconds']} s = **{pipe['runs_per_s']} runs/s** with Redis' main thread"
        f" {pipe['redis_main_thread_busy']:.0%} busy and"
        f" {pipe['redis_main_thread_waiting_for_cpu']:.0%} ready but waiting for a core"
        f" ({pipe['errors']} errors): **{pipe['runs_per_s_per_core']} runs/s per Redis core**"
        " (runs / main-thread CPU seconds).",
        "",
        f"Python replay (cross-check): {replay['runs']} runs in {replay['seconds']} s ="
        f" {replay['runs_per_s']} runs/s with Redis' main thread"
        f" {replay['redis_main_thread_busy']:.0%} busy: {replay['runs_per_s_per_core']} runs/s"
        " per core at its CPU per run.",
    ]
    return "\n".join(lines) + "\n"


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpus": multiprocessing.cpu_count(), "cpu": cpu, "python": platform.python_version()}


async def _main(opts: argparse.Namespace) -> dict[str, Any]:
    stack, capture = await run_stack(opts)
    template = build_template(capture)
    replay = await run_replay(template, opts)
    with tempfile.TemporaryDirectory(prefix="redisload-") as tmp:
        pipe = await run_pipes(template, opts, Path(tmp))
    return {
        "command": " ".join(["python -m bench.redisload", *sys.argv[1:]]),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": {k: v for k, v in vars(opts).items() if k != "out"},
        "stack": stack,
        "template": {
            "runs": template.runs,
            "pipelines": len(template.steps),
            "commands": sum(len(s.commands) for s in template.steps),
            "scripts": len(template.scripts),
        },
        "replay": replay,
        "pipe": pipe,
    }


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs counted on the stack")
    parser.add_argument("--capture-runs", type=int, default=20, help="runs MONITOR records")
    parser.add_argument("--warmup", type=int, default=20, help="runs before anything counts")
    parser.add_argument("--concurrency", type=int, default=10, help="runs in flight at once")
    parser.add_argument("--latency", type=float, default=0.5, help="s per offline LLM call")
    parser.add_argument("--idle", type=float, default=10.0, help="s of the idle baseline")
    parser.add_argument("--procs", type=int, default=3, help="replay client processes")
    parser.add_argument("--lanes", type=int, default=8, help="replay lanes per process")
    parser.add_argument("--duration", type=float, default=20.0, help="s of replay")
    parser.add_argument("--pipes", type=int, default=2, help="parallel redis-cli --pipe")
    parser.add_argument("--pipe-runs", type=int, default=40000, help="runs the pipes replay")
    parser.add_argument("--out", default=None, help="JSON here (and the table beside it, .md)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = _options(argv)
    result = asyncio.run(_main(opts))
    table = markdown(result)
    print(table)
    day = datetime.now(UTC).strftime("%Y%m%d")
    out = Path(opts.out) if opts.out else REPO / "bench" / "results" / f"redis-{day}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(f"`{result['command']}`\n\n{table}")
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
