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


def test_final_run_is_posted_signed_and_retried(make_stack: Any) -> None:
    received: list[tuple[dict[str, str], bytes]] = []
    failures = {"left": 1}  # the first delivery attempt gets a 503: it must be retried

    class Receiver(BaseHTTPRequestHandler):
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

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stack = make_stack(
            env={"PODCREW_WEBHOOK_SECRET": SECRET, "PODCREW_WEBHOOK_ALLOW_PRIVATE": "true"}
        )
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/podcrew"
        with httpx.Client(base_url=stack.config.api_url, timeout=30) as client:
            response = client.post(
                "/v1/runs", json={"question": "What is a Python iterator?", "callback_url": url}
            )
            assert response.status_code == 202
            run_id = response.json()["id"]
        deadline = time.monotonic() + 30
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
    assert len(received) == 1
    headers, body = received[0]
    run = json.loads(body)
    assert run["id"] == run_id and run["status"] == "succeeded"
    assert verify(
        SECRET.encode(),
        int(headers["Podcrew-Timestamp"]),
        body,
        headers["Podcrew-Signature"],
        now=time.time(),
    )
    assert not verify(
        SECRET.encode(),
        int(headers["Podcrew-Timestamp"]),
        body + b" ",
        headers["Podcrew-Signature"],
        now=time.time(),
    )


def test_callback_is_refused_when_webhooks_are_not_configured(runs: Any) -> None:
    response = runs.http.post(
        "/v1/runs", json={"question": "What is Python?", "callback_url": "https://example.com/h"}
    )
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("/webhooks-not-configured")
