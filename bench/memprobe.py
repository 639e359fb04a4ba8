"""`python -m bench.memprobe`: what one waiting HTTP request costs a server process, as a
floor for podcrew's memory per in-flight run (docs/benchmarks.md, "Memory").

Starts a minimal FastAPI app on uvicorn (uvloop, httptools: podcrew's server stack) whose
endpoints wait until the probe is done, opens `--requests` concurrent requests to it over
aiohttp, and prints the server's RSS growth per waiting request, for a GET and for a POST
with a small JSON body validated by a pydantic model, and the client's own growth per
request in flight (httpx over aiohttp, podcrew's internal client stack).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx
from httpx_aiohttp import AiohttpTransport

from bench.procstat import rss_kib
from podcrew_cli.stack import free_port

WAIT_S = 5.0

SERVER = """
import asyncio, sys
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
done = asyncio.Event()


class Body(BaseModel):
    question: str


@app.post("/post")
async def post(body: Body) -> dict[str, bool]:
    await done.wait()
    return {"ok": True}


@app.get("/get")
async def get() -> dict[str, bool]:
    await done.wait()
    return {"ok": True}


@app.get("/ready")
async def ready() -> dict[str, bool]:
    return {"ok": True}


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            loop="uvloop", http="httptools", access_log=False)
"""


async def probe(url: str, pid: int, method: str, count: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=count + 8, max_keepalive_connections=count + 8)
    transport = AiohttpTransport(limits=limits)
    async with httpx.AsyncClient(
        base_url=url, limits=limits, timeout=60, transport=transport
    ) as client:
        before, client_before = rss_kib(pid), rss_kib(os.getpid())
        if method == "POST":
            tasks = [
                asyncio.create_task(client.post("/post", json={"question": f"question {i}"}))
                for i in range(count)
            ]
        else:
            tasks = [asyncio.create_task(client.get("/get")) for _ in range(count)]
        await asyncio.sleep(WAIT_S)
        grown, client_grown = rss_kib(pid) - before, rss_kib(os.getpid()) - client_before
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return grown / count, client_grown / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/ready", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for method in ("GET", "POST"):
            server_kib, client_kib = asyncio.run(probe(url, server.pid, method, args.requests))
            print(
                f"{method} x {args.requests}: server {server_kib:.1f} KiB per waiting request, "
                f"client {client_kib:.1f} KiB per request in flight"
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
