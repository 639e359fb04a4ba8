"""`python -m bench.luabench`: what podcrew's hand-written Lua saves against redis-py's
normal API, per operation, on a real redis-server of its own.

podcrew ran three kinds of Redis step as one EVALSHA where redis-py's normal API would send
a pipeline: the ledger's check (three HMGET) and charge (three counters: two HINCRBY and an
EXPIRE each, in MULTI), and the publication of a run's events (an XADD per event and an
EXPIRE, in MULTI). The charge still is; the other two went back to pipelines after this
measured them under 1 % of a run's CPU. For each, both forms run `--ops` times, one after
another and then `--concurrency` at once, and the report gives the client's CPU per
operation (this process, which holds only the client) and Redis' CPU per operation
(`INFO cpu`), so the two forms can be set against a run's CPU in `make bench`. The charge's
script is imported from podcrew, so this measures the code that runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from podcrew_cli.stack import LOOPBACK, find_redis_server, free_port
from podcrew_core.runtime.ledger import _CHARGE

# The ledger's check and the publication of events as podcrew ran them in Lua before they
# went back to redis-py's pipelines: kept here so the measurement that decided it can be
# repeated.
_SPENT_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local counts = redis.call('HMGET', key, 'tokens', 'micro_usd')
  out[2 * i - 1] = counts[1] or 0
  out[2 * i] = counts[2] or 0
end
return out
"""
_PUBLISH_LUA = """
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
    'type', ARGV[i], 'data', ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return ids
"""
_EVENTS_PER_PUBLISH = 2  # a run publishes ~17 events in ~8 steps (make bench, XADD per run)
_TTL_S = 3600


Op = Callable[[int], Awaitable[Any]]


def _forms(redis: Redis) -> dict[str, tuple[Op, Op]]:
    """Each operation as (Lua, redis-py pipeline), taking an index to vary the run."""
    spent, charge, publish = (redis.register_script(s) for s in (_SPENT_LUA, _CHARGE, _PUBLISH_LUA))

    def keys(i: int) -> list[str]:
        return [f"bench:run:{i % 500}:spend", "bench:spend:tenant:t", "bench:spend:all"]

    async def check_lua(i: int) -> Any:
        return await spent(keys=keys(i))

    async def check_pipe(i: int) -> Any:
        async with redis.pipeline(transaction=False) as pipe:
            for key in keys(i):
                pipe.hmget(key, "tokens", "micro_usd")
            return await pipe.execute()

    async def charge_lua(i: int) -> Any:
        return await charge(keys=keys(i), args=(1200, 3400, _TTL_S))

    async def charge_pipe(i: int) -> Any:
        async with redis.pipeline(transaction=True) as pipe:
            for key in keys(i):
                pipe.hincrby(key, "tokens", 1200)
                pipe.hincrby(key, "micro_usd", 3400)
                pipe.expire(key, _TTL_S)
            return await pipe.execute()

    event = json.dumps({"index": 1, "ok": True, "findings": 4})

    async def publish_lua(i: int) -> Any:
        args: list[Any] = [20_000, _TTL_S]
        for _ in range(_EVENTS_PER_PUBLISH):
            args += ["research.finished", event]
        return await publish(keys=[f"bench:run:{i % 500}:events"], args=args)

    async def publish_pipe(i: int) -> Any:
        key = f"bench:run:{i % 500}:events"
        # MULTI, as the Lua step is: a run's events go in together or not at all.
        async with redis.pipeline(transaction=True) as pipe:
            for _ in range(_EVENTS_PER_PUBLISH):
                pipe.xadd(key, {"type": "research.finished", "data": event}, maxlen=20_000)
            pipe.expire(key, _TTL_S)
            return await pipe.execute()

    return {
        "ledger_check": (check_lua, check_pipe),
        "ledger_charge": (charge_lua, charge_pipe),
        "publish_events": (publish_lua, publish_pipe),
    }


async def _redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _measure(redis: Redis, op: Op, ops: int, concurrency: int) -> dict[str, float]:
    for i in range(200):  # warm: scripts loaded, connections open, keys exist
        await op(i)
    server0, client0 = await _redis_cpu_s(redis), time.process_time()
    if concurrency == 1:
        for i in range(ops):
            await op(i)
    else:

        async def lane(start: int) -> None:
            for i in range(start, ops, concurrency):
                await op(i)

        await asyncio.gather(*(lane(k) for k in range(concurrency)))
    client_s = time.process_time() - client0
    server_s = await _redis_cpu_s(redis) - server0
    return {
        "client_us_per_op": round(client_s / ops * 1e6, 1),
        "redis_us_per_op": round(server_s / ops * 1e6, 1),
    }


async def _run(port: int, ops: int, concurrency: int) -> dict[str, Any]:
    redis = Redis(host=LOOPBACK, port=port, max_connections=concurrency + 4)
    try:
        results: dict[str, Any] = {}
        for name, (lua, pipe) in _forms(redis).items():
            for level in (1, concurrency):
                results[f"{name}@{level}"] = {
                    "lua": await _measure(redis, lua, ops, level),
                    "pipeline": await _measure(redis, pipe, ops, level),
                }
        return results
    finally:
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=5000, help="operations per form and level")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--out", default=None, help="write the JSON here too")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            LOOPBACK,
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        results = asyncio.run(_run(port, args.ops, args.concurrency))
    finally:
        server.terminate()
        server.wait()
    text = json.dumps(results, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
