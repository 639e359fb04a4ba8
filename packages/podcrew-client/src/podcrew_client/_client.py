"""`Podcrew` and `AsyncPodcrew`: podcrew's run API from Python.

    client = Podcrew(base_url="http://127.0.0.1:8000", api_key="...")
    run = client.runs.wait(client.runs.create(question="How do generators work?").id)

Each client owns an httpx client (or uses the one it is given, which it then leaves open),
retries what may pass on a second try (see `_retry`), and raises podcrew's errors by meaning
(see `_errors`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse, connect_sse

from podcrew_client import _base
from podcrew_client._base import Request
from podcrew_client._errors import error_from_response, error_from_transport
from podcrew_client._events import DEFAULT_MAX_RECONNECTS, Resume, RunEvent
from podcrew_client._retry import DEFAULT_MAX_RETRIES, async_retrying, retrying
from podcrew_core.contracts.errors import PodcrewError
from podcrew_core.contracts.schemas import Estimate, Feedback, Run, RunAccepted


class Podcrew:
    """A blocking client of podcrew's API. `api_key` defaults to PODCREW_API_KEY and
    `base_url` to PODCREW_BASE_URL; `http_client` replaces the client it would make."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = _base.DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.base_url, self.api_key = _base.resolve(base_url, api_key)
        self.max_retries = max_retries
        self.max_reconnects = max_reconnects
        self._owned = http_client is None
        self._http = http_client or httpx.Client(timeout=timeout)
        self._headers = _base.default_headers(self.api_key)
        self.runs = Runs(self)

    def request(self, call: Request, *, retries: int | None = None) -> httpx.Response:
        """Send `call`, retrying what may pass; the answer, or the error it stands for."""
        for attempt in retrying(self.max_retries if retries is None else retries):
            with attempt:
                try:
                    response = self._http.request(
                        call.method,
                        self.base_url + call.path,
                        json=call.json,
                        params=call.params,
                        headers={**self._headers, **(call.headers or {})},
                    )
                except httpx.TransportError as exc:
                    raise error_from_transport(exc, self.base_url) from exc
                return _base.checked(response)
        raise AssertionError("unreachable: the retry policy reraises")  # pragma: no cover

    def estimate(self, question: str, **fields: Any) -> Estimate:
        """The tokens, cost and LLM calls the run of `question` would likely take."""
        response = self.request(_base.estimate_request(question, **fields))
        return Estimate.model_validate_json(response.content)

    def close(self) -> None:
        """Close the HTTP client, if this client made it."""
        if self._owned:
            self._http.close()

    def __enter__(self) -> Podcrew:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Runs:
    """`client.runs`: submit, follow, cancel and judge runs."""

    def __init__(self, client: Podcrew) -> None:
        self._client = client

    def create(
        self,
        question: str,
        *,
        max_subquestions: int | None = None,
        tier: _base.Tier | None = None,
        thread_id: str | None = None,
        callback_url: str | None = None,
        budget: Any = None,
        priority: _base.Priority | None = None,
        wait: float | None = None,
        idempotency_key: str | None = None,
    ) -> Run | RunAccepted:
        """Submit a question. With `wait`, the server holds the answer up to that many
        seconds and returns the finished `Run` if it ends by then; else a `RunAccepted`."""
        call = _base.create_request(
            question,
            idempotency_key=idempotency_key,
            wait=wait,
            max_subquestions=max_subquestions,
            tier=tier,
            thread_id=thread_id,
            callback_url=callback_url,
            budget=budget,
            priority=priority,
        )
        return _base.created(self._client.request(call))

    def get(self, run_id: str) -> Run:
        """The run: status, result, usage, feedback."""
        response = self._client.request(Request("GET", f"/v1/runs/{run_id}"))
        return Run.model_validate_json(response.content)

    def cancel(self, run_id: str) -> Run:
        """Cancel a queued or running run; `Conflict` if it has already ended."""
        response = self._client.request(Request("DELETE", f"/v1/runs/{run_id}"))
        return Run.model_validate_json(response.content)

    def feedback(self, run_id: str, score: int, **fields: Any) -> Feedback:
        """Judge a finished run's report: `score` 1 or -1, optional `comment`, `section`
        and `source` (the number of a cited source that was wrong)."""
        response = self._client.request(_base.feedback_request(run_id, score, **fields))
        return Feedback.model_validate_json(response.content)

    def wait(self, run_id: str, *, timeout: float | None = None) -> Run:
        """The run once it has ended; `TimeoutError` if it has not within `timeout` s."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for delay in _base.poll_delays():
            run = self.get(run_id)
            if run.status.terminal:
                return run
            if deadline is not None and time.monotonic() + delay > deadline:
                raise TimeoutError(f"run {run_id} still {run.status.value} after {timeout} s")
            time.sleep(delay)
        raise AssertionError("unreachable: poll_delays never ends")  # pragma: no cover

    def stream(self, run_id: str, *, last_event_id: str | None = None) -> Iterator[RunEvent]:
        """The run's events, from the first (or after `last_event_id`) to its final one,
        each once and in order, across dropped connections and server restarts."""
        client = self._client
        resume = Resume(last_event_id, client.max_reconnects)
        while not resume.done:
            error: PodcrewError | None = None
            try:
                with connect_sse(
                    client._http,
                    "GET",
                    f"{client.base_url}/v1/runs/{run_id}/events",
                    headers={**client._headers, **resume.headers()},
                ) as source:
                    if source.response.status_code >= 400:
                        source.response.read()
                        raise error_from_response(source.response)
                    for sse in source.iter_sse():
                        if (event := resume.accept(sse)) is not None:
                            yield event
                        if resume.done or resume.closing:
                            break
            except httpx.TransportError as exc:
                error = error_from_transport(exc, client.base_url)
            except PodcrewError as exc:
                error = exc
            if not resume.done:
                time.sleep(resume.reconnect_delay(error))


class AsyncPodcrew:
    """The asyncio client: the same calls as `Podcrew`, awaited."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = _base.DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_reconnects: int = DEFAULT_MAX_RECONNECTS,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url, self.api_key = _base.resolve(base_url, api_key)
        self.max_retries = max_retries
        self.max_reconnects = max_reconnects
        self._owned = http_client is None
        self._http = http_client or httpx.AsyncClient(timeout=timeout)
        self._headers = _base.default_headers(self.api_key)
        self.runs = AsyncRuns(self)

    async def request(self, call: Request, *, retries: int | None = None) -> httpx.Response:
        """Send `call`, retrying what may pass; the answer, or the error it stands for."""
        async for attempt in async_retrying(self.max_retries if retries is None else retries):
            with attempt:
                try:
                    response = await self._http.request(
                        call.method,
                        self.base_url + call.path,
                        json=call.json,
                        params=call.params,
                        headers={**self._headers, **(call.headers or {})},
                    )
                except httpx.TransportError as exc:
                    raise error_from_transport(exc, self.base_url) from exc
                return _base.checked(response)
        raise AssertionError("unreachable: the retry policy reraises")  # pragma: no cover

    async def estimate(self, question: str, **fields: Any) -> Estimate:
        """The tokens, cost and LLM calls the run of `question` would likely take."""
        response = await self.request(_base.estimate_request(question, **fields))
        return Estimate.model_validate_json(response.content)

    async def close(self) -> None:
        """Close the HTTP client, if this client made it."""
        if self._owned:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncPodcrew:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncRuns:
    """`client.runs` of the asyncio client."""

    def __init__(self, client: AsyncPodcrew) -> None:
        self._client = client

    async def create(self, question: str, **fields: Any) -> Run | RunAccepted:
        """Submit a question; the keyword arguments are those of `Runs.create`."""
        idempotency_key, wait = fields.pop("idempotency_key", None), fields.pop("wait", None)
        call = _base.create_request(question, idempotency_key=idempotency_key, wait=wait, **fields)
        return _base.created(await self._client.request(call))

    async def get(self, run_id: str) -> Run:
        """The run: status, result, usage, feedback."""
        response = await self._client.request(Request("GET", f"/v1/runs/{run_id}"))
        return Run.model_validate_json(response.content)

    async def cancel(self, run_id: str) -> Run:
        """Cancel a queued or running run; `Conflict` if it has already ended."""
        response = await self._client.request(Request("DELETE", f"/v1/runs/{run_id}"))
        return Run.model_validate_json(response.content)

    async def feedback(self, run_id: str, score: int, **fields: Any) -> Feedback:
        """Judge a finished run's report (see `Runs.feedback`)."""
        response = await self._client.request(_base.feedback_request(run_id, score, **fields))
        return Feedback.model_validate_json(response.content)

    async def wait(self, run_id: str, *, timeout: float | None = None) -> Run:  # noqa: ASYNC109 - the sync client's signature
        """The run once it has ended; `TimeoutError` if it has not within `timeout` s."""
        async with asyncio.timeout(timeout):
            for delay in _base.poll_delays():
                run = await self.get(run_id)
                if run.status.terminal:
                    return run
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: poll_delays never ends")  # pragma: no cover

    async def stream(
        self, run_id: str, *, last_event_id: str | None = None
    ) -> AsyncIterator[RunEvent]:
        """The run's events, each once and in order, across dropped connections."""
        client = self._client
        resume = Resume(last_event_id, client.max_reconnects)
        while not resume.done:
            error: PodcrewError | None = None
            try:
                async with aconnect_sse(
                    client._http,
                    "GET",
                    f"{client.base_url}/v1/runs/{run_id}/events",
                    headers={**client._headers, **resume.headers()},
                ) as source:
                    if source.response.status_code >= 400:
                        await source.response.aread()
                        raise error_from_response(source.response)
                    async for sse in source.aiter_sse():
                        if (event := resume.accept(sse)) is not None:
                            yield event
                        if resume.done or resume.closing:
                            break
            except httpx.TransportError as exc:
                error = error_from_transport(exc, client.base_url)
            except PodcrewError as exc:
                error = exc
            if not resume.done:
                await asyncio.sleep(resume.reconnect_delay(error))
