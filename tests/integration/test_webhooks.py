"""Completion webhooks end to end: a signed POST of the final run to the callback URL."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from podcrew_orchestrator.webhooks import verify

pytestmark = pytest.mark.integration

SECRET = "webhook-secret-for-integration-tests"


class Hooks:
    """A webhook receiver on loopback: every delivery it got, answered 204 (503 to the
    first `failing` attempts)."""

    def __init__(self, failing: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received, failures = self.received, {"left": failing}

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if failures["left"]:
                    failures["left"] -= 1
                    self.send_response(503)
                else:
                    received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def runs(self) -> list[str]:
        return [json.loads(body)["id"] for _, body in self.received]

    def wait_for(self, count: int, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # long enough for a second delivery of any of them to arrive

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Any:
    receiver = Hooks()
    yield receiver
    receiver.close()


@pytest.fixture
def hooked(make_stack: Any) -> Any:
    return make_stack(
        env={
            "PODCREW_WEBHOOK_SECRET": SECRET,
            "PODCREW_WEBHOOK_ALLOW_PRIVATE": "true",
            "PODCREW_LLM_OFFLINE_LATENCY_S": "0.3",
        }
    )


def test_final_run_is_posted_signed_and_retried(hooked: Any) -> None:
    hooks = Hooks(failing=1)  # the first delivery attempt gets a 503: it must be retried
    try:
        with httpx.Client(base_url=hooked.config.api_url, timeout=30) as client:
            response = client.post(
                "/v1/runs",
                json={"question": "What is a Python iterator?", "callback_url": hooks.url},
            )
            assert response.status_code == 202
            run_id = response.json()["id"]
        hooks.wait_for(1)
    finally:
        hooks.close()
    assert len(hooks.received) == 1
    headers, body = hooks.received[0]
    _assert_signed_final(headers, body, run_id)
    assert not verify(
        SECRET.encode(),
        int(headers["Podcrew-Timestamp"]),
        body + b" ",
        headers["Podcrew-Signature"],
        now=time.time(),
    )


def _assert_signed_final(headers: dict[str, str], body: bytes, run_id: str) -> dict[str, Any]:
    run: dict[str, Any] = json.loads(body)
    assert run["id"] == run_id and run["status"] == "succeeded"
    assert verify(
        SECRET.encode(),
        int(headers["Podcrew-Timestamp"]),
        body,
        headers["Podcrew-Signature"],
        now=time.time(),
    )
    return run


def test_a_run_answered_from_the_cache_is_announced_once(hooked: Any, hooks: Hooks) -> None:
    body = {"question": f"What is a Python tuple {time.time_ns()}?", "callback_url": hooks.url}
    with httpx.Client(base_url=hooked.config.api_url, timeout=60) as client:
        first = client.post("/v1/runs?wait=30", json=body).json()
        assert first["status"] == "succeeded" and not first["cached"]
        hooks.wait_for(1)
        second = client.post("/v1/runs", json=body).json()
        assert second["status"] == "succeeded" and second["cached"]
    hooks.wait_for(2)
    assert hooks.runs() == [first["id"], second["id"]]
    headers, payload = hooks.received[1]
    cached = _assert_signed_final(headers, payload, second["id"])
    assert cached["cached"] and cached["result"] == first["result"]
    deliveries = {h["Podcrew-Delivery"] for h, _ in hooks.received}
    assert len(deliveries) == 2


def test_identical_concurrent_runs_with_callbacks_are_each_announced_once(
    hooked: Any, hooks: Hooks
) -> None:
    # A run that names a callback_url is never coalesced onto another: it is its own run,
    # with its own id, result and webhook.
    body = {"question": f"What is a Python set {time.time_ns()}?", "callback_url": hooks.url}
    with httpx.Client(base_url=hooked.config.api_url, timeout=60) as client:
        ids = [client.post("/v1/runs", json=body).json()["id"] for _ in range(3)]
    assert len(set(ids)) == 3
    hooks.wait_for(3)
    assert sorted(hooks.runs()) == sorted(ids)
    for (headers, payload), run_id in zip(
        sorted(hooks.received, key=lambda r: json.loads(r[1])["id"]), sorted(ids), strict=True
    ):
        _assert_signed_final(headers, payload, run_id)


def test_callback_is_refused_when_webhooks_are_not_configured(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs", json={"question": "What is Python?", "callback_url": "https://example.com/h"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/webhooks-not-configured")
