"""The operator's readiness endpoint, beside kopf's liveness one.

kopf serves liveness only: its `/healthz` answers while the event loop does. Readiness says
whether the operator can do its job now: it has started (logged in to the cluster, its runtime
built) and the orchestrator api it submits runs to says it is ready. While it is not, AgentRuns
wait Pending; the probe shows why (`kubectl get pods`, `helm --wait`) without the restart a
failed liveness would bring, which would not help. The server is aiohttp, as kopf's own is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

Check = Callable[[], Awaitable[str | None]]
"""Why the operator is not ready, or None when it is."""


class ReadinessServer:
    """`GET <path>`: 200 `{"status": "ready"}`, or 503 with the reason. Each probe asks anew,
    so the answer is never older than the kubelet's period."""

    def __init__(self, endpoint: str, check: Check) -> None:
        parts = urlsplit(endpoint)  # http://HOST:PORT/PATH, as the settings' pattern checks
        self._host = parts.hostname or "0.0.0.0"  # noqa: S104 - the kubelet probes the pod IP
        self._port = parts.port
        self._path = parts.path or "/"
        self._check = check
        self._runner: web.AppRunner | None = None

    async def _answer(self, _: web.Request) -> web.Response:
        reason = await self._check()
        if reason is None:
            return web.json_response({"status": "ready"})
        return web.json_response({"status": "not ready", "reason": reason}, status=503)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(self._path, self._answer)
        # No access log: the kubelet probes every few seconds.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
