"""The orchestrator's public run API, as the operator uses it.

Every failure becomes an error by meaning (`podcrew_operator.errors`). An answer's problem is
read with podcrew's codec (`contracts.problem`), so its verdict decides: what can pass
(connection errors, 401, an error the API marks retryable, else 408, 429 and 5xx: the one
policy of `runtime.resilience`) is `Retryable` with the server's `Retry-After`; what cannot
(the run refused) is not. The `httpx.AsyncClient` is injected, created at start-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from podcrew_core.contracts.schemas import Run, RunAccepted, RunCreate, RunStatus
from podcrew_core.runtime.resilience import answer_error

from ..errors import (
    OrchestratorRejected,
    OrchestratorUnauthorized,
    OrchestratorUnavailable,
    RunLost,
)
from ..retry import retry_after_s
from ..settings import OperatorSettings

USER_AGENT = "podcrew-operator"
# Below the chart's readiness probe timeout (5 s), so the probe gets the reason, not a timeout.
READY_TIMEOUT_S = 3.0


def create_http_client(settings: OperatorSettings) -> httpx.AsyncClient:
    """The operator's one client to the orchestrator; closed at shutdown."""
    headers = {"User-Agent": USER_AGENT}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    return httpx.AsyncClient(
        base_url=settings.api_url,
        headers=headers,
        timeout=httpx.Timeout(
            settings.request_timeout_s, connect=min(5.0, settings.request_timeout_s)
        ),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
        follow_redirects=False,
    )


@dataclass(frozen=True, slots=True)
class Submitted:
    run_id: str
    status: RunStatus


def _detail(response: httpx.Response) -> str:
    """What an error answer says, by the codec (its problem's detail, else its text)."""
    return answer_error(response.status_code, response.content, response.headers).detail


def _rejected(what: str, response: httpx.Response) -> OrchestratorRejected:
    return OrchestratorRejected(
        f"{what}: {response.status_code}: {_detail(response)}", status=response.status_code
    )


class OrchestratorClient:
    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def _send(self, what: str, request: httpx.Request) -> httpx.Response:
        try:
            response = await self.http.send(request)
        except httpx.TimeoutException as exc:
            raise OrchestratorUnavailable(
                f"{what}: the orchestrator did not answer in time"
            ) from exc
        except httpx.TransportError as exc:
            raise OrchestratorUnavailable(
                f"{what}: the orchestrator is unreachable ({exc.__class__.__name__})"
            ) from exc
        if response.status_code == 401:
            raise OrchestratorUnauthorized(f"{what}: the orchestrator refused the API key (401)")
        if response.status_code < 400:
            return response
        error = answer_error(response.status_code, response.content, response.headers)
        if error.retryable:
            raise OrchestratorUnavailable(
                f"{what}: the orchestrator answered {response.status_code}: {error.detail}",
                retry_after_s=retry_after_s(error.headers.get("Retry-After"), time.time()),
            )
        return response

    async def not_ready(self) -> str | None:
        """Why the api cannot take runs now, by its own `/readyz`; None when it can."""
        try:
            response = await self.http.get("/readyz", timeout=READY_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return f"the orchestrator api is unreachable ({exc.__class__.__name__})"
        if response.status_code != 200:
            return f"the orchestrator api is not ready ({response.status_code})"
        return None

    async def submit(self, body: RunCreate, idempotency_key: str) -> Submitted:
        """`POST /v1/runs`; the same key always names the same run, however often it is sent."""
        request = self.http.build_request(
            "POST",
            "/v1/runs",
            content=body.model_dump_json(exclude_none=True),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
        )
        response = await self._send("submit", request)
        if response.status_code == 409 and "being created" in _detail(response):
            # The first submission with this key is still being stored: it will be there.
            raise OrchestratorUnavailable(
                "submit: the run is still being created", retry_after_s=1.0
            )
        if response.status_code not in (200, 202):
            raise OrchestratorRejected(
                f"the orchestrator refused the run ({response.status_code}): {_detail(response)}",
                status=response.status_code,
            )
        try:
            if response.status_code == 200:
                run = Run.model_validate_json(response.content)
                return Submitted(run.id, run.status)
            accepted = RunAccepted.model_validate_json(response.content)
        except ValidationError as exc:
            raise OrchestratorUnavailable("submit: the answer does not match the API") from exc
        return Submitted(accepted.id, accepted.status)

    async def get(self, run_id: str) -> Run:
        """`GET /v1/runs/{id}`; `RunLost` when the orchestrator does not know it (any more)."""
        response = await self._send(
            "read run", self.http.build_request("GET", f"/v1/runs/{run_id}")
        )
        if response.status_code == 404:
            raise RunLost(f"the orchestrator has no run {run_id} (expired, or another tenant)")
        if response.status_code != 200:
            raise _rejected(f"read run {run_id}", response)
        try:
            return Run.model_validate_json(response.content)
        except ValidationError as exc:
            raise OrchestratorUnavailable(
                f"read run {run_id}: the answer does not match the API"
            ) from exc

    async def cancel(self, run_id: str) -> bool:
        """`DELETE /v1/runs/{id}`: True if this call cancelled it; False if it had already
        ended (409) or is unknown (404) — nothing left to cancel either way."""
        response = await self._send(
            "cancel run", self.http.build_request("DELETE", f"/v1/runs/{run_id}")
        )
        if response.status_code == 200:
            return True
        if response.status_code in (404, 409):
            return False
        raise _rejected(f"cancel run {run_id}", response)
