"""Benchmark experiments: candidate fixes applied to podcrew's processes at start-up, out of
tree, so they can be measured before anyone changes the services.

Enable with the stack settings `PYTHONPATH=bench/experiments` (absolute) and
`BENCH_EXPERIMENTS=name,name`, e.g.

    python -m bench --env PYTHONPATH=$PWD/bench/experiments \
        --env BENCH_EXPERIMENTS=coalesce_deltas,aiohttp_internal

Each experiment patches one module right after it is first imported (an import hook), in
the processes that import it. The names:

- `coalesce_deltas`: the worker republishes the writer's text deltas as one `writer.delta`
  event per 50 ms instead of one per delta (the text is the same, in fewer events).
- `coalesce_writer_sse`: the writer agent sends its text deltas to the worker as one SSE
  `delta` event per 50 ms instead of one per model delta.
- `aiohttp_internal`: the worker's client to the agents keeps the httpx API over aiohttp's
  HTTP stack (the `httpx-aiohttp` transport; the copy vendored by the anthropic SDK, adapted
  to httpx).
- `aiohttp_llm`: the anthropic SDK client of every agent uses aiohttp
  (`anthropic.DefaultAioHttpClient`).
- `batched_cancel_watch`: instead of one task per run polling the run's status every 0.5 s
  (`Worker._watch_cancel`), one task per worker reads the status of every run it holds in a
  single pipelined round trip every 0.5 s.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time
import types
from collections.abc import Callable
from typing import Any

EXPERIMENTS = {e for e in os.environ.get("BENCH_EXPERIMENTS", "").split(",") if e}
_PATCHES: dict[str, list[Callable[[types.ModuleType], None]]] = {}


def _after_import(module: str) -> Callable[[Callable[[types.ModuleType], None]], Any]:
    def register(patch: Callable[[types.ModuleType], None]) -> Any:
        _PATCHES.setdefault(module, []).append(patch)
        return patch

    return register


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            original(module)
            for patch in _PATCHES.pop(fullname, []):
                patch(module)

        loader.exec_module = exec_module
        return spec


if "coalesce_deltas" in EXPERIMENTS:

    @_after_import("podcrew_orchestrator.pipeline")
    def _coalesce(pipeline: types.ModuleType) -> None:
        flush_s = 0.05

        async def _write(self: Any, body: Any, spec: Any, emit: Any) -> Any:
            await emit(pipeline.EventType.WRITER_STARTED, {"sections": len(body.sections)})
            with pipeline.invoke_agent_span(pipeline.WRITER_AGENT, remote=True, run_id=spec.run_id):
                buffered: list[str] = []
                last = time.monotonic()
                async for item in self.writer.stream(
                    body, spec.deadline, spec.budget.remaining, spec.limits
                ):
                    if isinstance(item, pipeline.WriteResponse):
                        if buffered:
                            await emit(pipeline.EventType.WRITER_DELTA, {"text": "".join(buffered)})
                        return item
                    buffered.append(item)
                    now = time.monotonic()
                    if now - last >= flush_s:
                        await emit(pipeline.EventType.WRITER_DELTA, {"text": "".join(buffered)})
                        buffered.clear()
                        last = now
            raise pipeline.UpstreamError("writer-agent closed the stream without a result")

        pipeline.Pipeline._write = _write


if "batched_cancel_watch" in EXPERIMENTS:

    @_after_import("podcrew_orchestrator.worker")
    def _batched_cancel(worker: types.ModuleType) -> None:
        import asyncio

        async def poll(self: Any) -> None:
            watched: dict[str, tuple[Any, Any]] = self._bench_watched
            while True:
                await asyncio.sleep(worker.CANCEL_POLL_S)
                if not watched:
                    continue
                run_ids = list(watched)
                try:
                    async with self.store.redis.pipeline(transaction=False) as pipe:
                        for run_id in run_ids:
                            pipe.hget(self.store.keys.run(run_id), "status")
                        statuses = await pipe.execute()
                except Exception:
                    continue
                for run_id, status in zip(run_ids, statuses, strict=True):
                    if status == worker.RunStatus.CANCELLED.value and run_id in watched:
                        work, flag = watched.pop(run_id)
                        flag.set()
                        work.cancel()

        async def _watch_cancel(self: Any, run_id: str, work: Any, flag: Any) -> None:
            if not hasattr(self, "_bench_watched"):
                self._bench_watched = {}
                self._bench_poller = asyncio.create_task(poll(self))
            self._bench_watched[run_id] = (work, flag)
            try:
                await asyncio.Event().wait()  # until the run ends and cancels its watcher
            finally:
                self._bench_watched.pop(run_id, None)

        worker.Worker._watch_cancel = _watch_cancel


if "coalesce_writer_sse" in EXPERIMENTS:

    @_after_import("podcrew_writer.compose")
    def _coalesce_writer(compose: types.ModuleType) -> None:
        original = compose.write_stream
        flush_s = 0.05

        async def write_stream(provider: Any, draft: Any) -> Any:
            buffered: list[str] = []
            last = time.monotonic()
            async for item in original(provider, draft):
                if isinstance(item, str):
                    buffered.append(item)
                    now = time.monotonic()
                    if now - last >= flush_s:
                        yield "".join(buffered)
                        buffered.clear()
                        last = now
                    continue
                if buffered:
                    yield "".join(buffered)
                    buffered.clear()
                yield item

        compose.write_stream = write_stream


def _httpx_aiohttp_transport() -> type:
    """The anthropic SDK's vendored `httpx_aiohttp` transport, loaded against httpx."""
    spec = importlib.util.find_spec("anthropic._vendor.httpx_aiohttp.transport")
    assert spec is not None
    assert spec.origin is not None
    with open(spec.origin) as f:
        source = f.read().replace("import httpx2 as httpx", "import httpx")
    module = types.ModuleType("bench_httpx_aiohttp_transport")
    exec(compile(source, spec.origin, "exec"), module.__dict__)
    return module.AiohttpTransport  # type: ignore[no-any-return]


if "aiohttp_internal" in EXPERIMENTS:

    @_after_import("podcrew_core.http")
    def _aiohttp_internal(http: types.ModuleType) -> None:
        import httpx

        def create_http_client(
            max_connections: int = 200, headers: dict[str, str] | None = None
        ) -> httpx.AsyncClient:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            return httpx.AsyncClient(
                headers=headers,
                limits=limits,
                timeout=httpx.Timeout(30.0, connect=2.0),
                transport=_httpx_aiohttp_transport()(limits=limits),
            )

        http.create_http_client = create_http_client


if "aiohttp_llm" in EXPERIMENTS:

    @_after_import("podcrew_core.llm.anthropic")
    def _aiohttp_llm(module: types.ModuleType) -> None:
        import anthropic

        shim = types.SimpleNamespace(**vars(module.httpx2))
        shim.AsyncClient = anthropic.DefaultAioHttpClient
        module.httpx2 = shim


if _PATCHES:
    sys.meta_path.insert(0, _Hook())
