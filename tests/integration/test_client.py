"""podcrew-client and `podcrew ask` against the real stack: every call, a stream cut in the
middle (by a proxy, and by restarting the api) resuming with no gap and no repeat, a rate
limit waited out, a retried create that runs once, and a stack with authentication on."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podcrew_cli.stack import LOOPBACK, Stack
from podcrew_client import (
    AsyncPodcrew,
    Conflict,
    EventType,
    Podcrew,
    RateLimited,
    RunAccepted,
    RunEvent,
    RunStatus,
    Unauthorized,
)

from .conftest import keyed_stack

pytestmark = pytest.mark.integration

QUESTION = "How do Python generators and the yield statement work?"
KEY = "acme-client-0123456789"


class Proxy:
    """A loopback TCP proxy to the api whose open connections the test can cut, and which
    can swallow the answer to the next request after the api has sent it."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server((LOOPBACK, 0))
        self.url = f"http://{LOOPBACK}:{self.server.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.swallow_next = False
        self.swallowed = b""
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((LOOPBACK, self.target))
            self.sockets += [client, upstream]
            swallow, self.swallow_next = self.swallow_next, False
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            target = self._swallow if swallow else self._pipe
            threading.Thread(target=target, args=(upstream, client), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            s.close()

    def _swallow(self, upstream: socket.socket, client: socket.socket) -> None:
        while b'"status"' not in self.swallowed:
            self.swallowed += upstream.recv(65536)
        for s in (upstream, client):
            s.close()

    def cut(self) -> None:
        """Drop every open connection, as a network failure would."""
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()

    def close(self) -> None:
        self.server.close()
        self.cut()


@pytest.fixture
def client(stack: Stack) -> Iterator[Podcrew]:
    with Podcrew(base_url=stack.config.api_url) as podcrew:
        yield podcrew


@pytest.fixture
def proxy(stack: Stack) -> Iterator[Proxy]:
    p = Proxy(stack.config.api_port)
    yield p
    p.close()


def _ids(events: list[RunEvent]) -> list[str]:
    return [e.id for e in events]


def test_create_wait_get_feedback_and_estimate(client: Podcrew) -> None:
    estimate = client.estimate(question=QUESTION, max_subquestions=2)
    assert 0 < estimate.tokens.low <= estimate.tokens.high
    accepted = client.runs.create(question=QUESTION, max_subquestions=2, tier="economy")
    assert isinstance(accepted, RunAccepted)
    run = client.runs.wait(accepted.id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED and run.result is not None
    assert run.result.sources and run.tier == "economy"
    given = client.runs.feedback(run.id, 1, comment="clear")
    assert (given.score, given.comment) == (1, "clear")
    assert [f.score for f in client.runs.get(run.id).feedback] == [1]


def test_cancel_ends_a_running_run_and_a_second_cancel_conflicts(client: Podcrew) -> None:
    run_id = client.runs.create(question=QUESTION).id
    assert client.runs.cancel(run_id).status is RunStatus.CANCELLED
    with pytest.raises(Conflict, match="already cancelled"):
        client.runs.cancel(run_id)
    assert client.runs.wait(run_id, timeout=30).status is RunStatus.CANCELLED


def test_a_stream_cut_mid_run_resumes_without_gap_or_repeat(
    client: Podcrew, proxy: Proxy, stack: Stack
) -> None:
    run_id = client.runs.create(question=QUESTION).id
    events: list[RunEvent] = []
    with Podcrew(base_url=proxy.url) as through:
        for event in through.runs.stream(run_id):
            events.append(event)
            if len(events) in (2, 4):
                proxy.cut()
    everything = list(client.runs.stream(run_id))
    assert _ids(events) == _ids(everything)
    assert events[-1].type is EventType.RUN_SUCCEEDED


def test_a_create_whose_answer_is_lost_is_retried_and_runs_once(
    client: Podcrew, proxy: Proxy
) -> None:
    proxy.swallow_next = True
    with Podcrew(base_url=proxy.url) as through:
        accepted = through.runs.create(question=QUESTION)
    first = json.loads(proxy.swallowed.split(b"\r\n\r\n", 1)[1])
    assert accepted.id == first["id"]  # the retry named the run the lost answer created
    assert client.runs.wait(accepted.id, timeout=60).status is RunStatus.SUCCEEDED


async def test_the_async_client_follows_a_run(stack: Stack) -> None:
    async with AsyncPodcrew(base_url=stack.config.api_url) as client:
        accepted = await client.runs.create(question=QUESTION, max_subquestions=2)
        events = [e async for e in client.runs.stream(accepted.id)]
        run = await client.runs.get(accepted.id)
    assert events[0].type is EventType.RUN_QUEUED and events[-1].terminal
    assert run.status is RunStatus.SUCCEEDED


@pytest.fixture(scope="module")
def guarded() -> Iterator[Stack]:
    """A stack with authentication on and a tenant limit of one submission a second."""
    with keyed_stack(
        {KEY: "acme"},
        PODCREW_ORCHESTRATOR_DEFAULT_TENANT_LIMITS=json.dumps(
            {"requests_per_minute": 60, "burst": 1}
        ),
        PODCREW_LLM_OFFLINE_LATENCY_S="0.05",
    ) as running:
        yield running


def test_the_key_opens_an_auth_on_stack_and_no_key_is_refused(guarded: Stack) -> None:
    url = guarded.config.api_url
    with (
        Podcrew(base_url=url, api_key="wrong-key-0123456789") as client,
        pytest.raises(Unauthorized),
    ):
        client.runs.create(question=QUESTION)
    with Podcrew(base_url=url, api_key=KEY) as client:
        run = client.runs.wait(client.runs.create(question=QUESTION).id, timeout=60)
        assert run.tenant == "acme" and run.status is RunStatus.SUCCEEDED


def test_a_rate_limit_is_waited_out_as_retry_after_says(guarded: Stack) -> None:
    # Questions of their own: a question answered from the result cache is not a submission.
    questions = iter(f"What does the generator protocol do, case {n}?" for n in range(4))
    url = guarded.config.api_url
    # The first create waits out the slot an earlier test's submission holds; the next, at
    # once and with no retries, meets the limit.
    with Podcrew(base_url=url, api_key=KEY) as patient:
        patient.runs.create(question=next(questions))
    with (
        Podcrew(base_url=url, api_key=KEY, max_retries=0) as client,
        pytest.raises(RateLimited) as limited,
    ):
        client.runs.create(question=next(questions))
    assert int(limited.value.headers["Retry-After"]) >= 1
    with Podcrew(base_url=url, api_key=KEY) as client:
        client.runs.create(question=next(questions))
        started = time.monotonic()
        second = client.runs.create(question=next(questions))
        assert time.monotonic() - started >= 0.9  # it waited, then got through
        assert second.status is RunStatus.QUEUED


def _ask(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "podcrew_cli", "ask", QUESTION, "--api-url", url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_podcrew_ask_says_in_one_line_what_stopped_it(guarded: Stack) -> None:
    url = guarded.config.api_url
    refused = _ask(url, "--api-key", "wrong-key-0123456789")
    unreachable = _ask(f"http://{LOOPBACK}:9")
    for done, said in ((refused, "refused the key"), (unreachable, "cannot reach podcrew")):
        lines = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and said in lines[0], done
        assert "Traceback" not in done.stderr
    answered = _ask(url, "--api-key", KEY)
    assert answered.returncode == 0, answered.stdout[-2000:] + answered.stderr[-2000:]


def test_a_stream_rides_out_an_api_restart(make_stack: Any) -> None:
    # A stack of its own: restarting the shared stack's api would cut the other tests' calls.
    stack = make_stack(env={"PODCREW_LLM_OFFLINE_LATENCY_S": "0.1"})
    with Podcrew(base_url=stack.config.api_url) as client:
        run_id = client.runs.create(question=QUESTION).id
        events: list[RunEvent] = []
        two = threading.Event()

        def read() -> None:
            for event in client.runs.stream(run_id):
                events.append(event)
                if len(events) == 2:
                    two.set()

        # The stream is read on a thread and the api restarted from this one: a service
        # started from a thread would get SIGTERM when that thread ends (PR_SET_PDEATHSIG
        # follows the thread that forked it).
        reader = threading.Thread(target=read)
        reader.start()
        assert two.wait(30)
        stack.restart("api")
        reader.join(60)
        assert not reader.is_alive()
        assert _ids(events) == _ids(list(client.runs.stream(run_id)))
        assert events[-1].terminal
