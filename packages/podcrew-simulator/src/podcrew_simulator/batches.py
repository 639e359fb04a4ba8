"""The Message Batches API, simulated: the endpoints the SDK's `messages.batches` uses.

`POST /v1/messages/batches` (create), `GET /v1/messages/batches/{id}` (retrieve),
`GET /v1/messages/batches/{id}/results` (the results as JSONL, once ended),
`POST /v1/messages/batches/{id}/cancel` and `GET /v1/messages/batches` (list, one page).
Each request is answered by the same deterministic model as `/v1/messages` when the batch is
created (its prompt prefixes count towards the prompt cache, as a batch's do); the batch
reports `in_progress` until the profile's `batch_latency_s` has passed, then `ended` with a
`results_url`. Batches live in memory.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from pydantic import ValidationError

from podcrew_simulator.engine import Simulator, answer
from podcrew_simulator.wire import MessagesRequest, message_json, new_message_id

# The API's own limit on requests in one batch.
MAX_BATCH_REQUESTS = 100_000
_EXPIRY = timedelta(hours=24)

# Errors are raised as HTTPException: the app answers them in the API's shape.
batches = APIRouter(prefix="/v1/messages/batches", tags=["batches"])


@dataclass
class Batch:
    """One batch: its results are decided at creation and shown once it has ended."""

    id: str
    created_at: datetime
    ready_at: float  # perf_counter time at which processing ends
    results: list[dict[str, Any]]
    canceled_at: datetime | None = None
    ended_at: datetime | None = field(default=None)

    def ended(self) -> bool:
        if self.ended_at is None and (
            self.canceled_at is not None or time.perf_counter() >= self.ready_at
        ):
            self.ended_at = datetime.now(UTC)
        return self.ended_at is not None

    def counts(self) -> dict[str, int]:
        kinds = ("succeeded", "errored", "canceled", "expired")
        if not self.ended():
            return {"processing": len(self.results)} | dict.fromkeys(kinds, 0)
        out = {"processing": 0} | dict.fromkeys(kinds, 0)
        for line in self.results:
            out[line["result"]["type"]] += 1
        return out

    def to_json(self, base_url: str) -> dict[str, Any]:
        ended = self.ended()
        status = "ended" if ended else ("canceling" if self.canceled_at else "in_progress")
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": self.counts(),
            "created_at": self.created_at.isoformat(),
            "expires_at": (self.created_at + _EXPIRY).isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "cancel_initiated_at": self.canceled_at.isoformat() if self.canceled_at else None,
            "archived_at": None,
            "results_url": f"{base_url}v1/messages/batches/{self.id}/results" if ended else None,
        }


def _result(sim: Simulator, custom_id: str, params: Any) -> dict[str, Any]:
    """One request's result line: a message, or the error the API would report for it."""
    try:
        request = MessagesRequest.model_validate(params)
    except ValidationError as exc:
        error = {"type": "invalid_request_error", "message": str(exc.errors()[0]["msg"])}
        return {"custom_id": custom_id, "result": {"type": "errored", "error": error}}
    reply = answer(request, sim.cache)
    message = message_json(
        message_id=new_message_id(),
        model=request.model,
        content=reply.content,
        stop_reason=reply.stop_reason,
        usage=reply.usage,
    )
    return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}


def _sim(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


def _find(request: Request, batch_id: str) -> Batch:
    batch = _sim(request).batches.get(batch_id)
    if batch is None:
        raise HTTPException(404, f"no batch {batch_id}")
    return batch


@batches.post("", summary="Create a Message Batch", response_model=None)
async def create_batch(request: Request) -> Response:
    sim = _sim(request)
    try:
        body = orjson.loads(await request.body())
        items = body["requests"]
        ids = [item["custom_id"] for item in items]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise HTTPException(400, "requests: a list of {custom_id, params}") from None
    if not 1 <= len(items) <= MAX_BATCH_REQUESTS or len(set(ids)) != len(ids):
        raise HTTPException(400, "requests: 1 to 100000 unique custom_ids")
    batch = Batch(
        id=f"msgbatch_{secrets.token_hex(12)}",
        created_at=datetime.now(UTC),
        ready_at=time.perf_counter() + sim.profile.batch_latency_s,
        results=[_result(sim, item["custom_id"], item.get("params")) for item in items],
    )
    sim.batches[batch.id] = batch
    return Response(orjson.dumps(batch.to_json(str(request.base_url))), 200)


@batches.get("", summary="List Message Batches, newest first", response_model=None)
async def list_batches(request: Request) -> Response:
    base = str(request.base_url)
    data = [b.to_json(base) for b in reversed(_sim(request).batches.values())]
    page = {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
    return Response(orjson.dumps(page), 200)


@batches.get("/{batch_id}", summary="Retrieve a Message Batch", response_model=None)
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    batch = _find(request, batch_id)
    return Response(orjson.dumps(batch.to_json(str(request.base_url))), 200)


@batches.get("/{batch_id}/results", summary="Results of a Message Batch", response_model=None)
async def batch_results(request: Request, batch_id: str) -> Response:
    batch = _find(request, batch_id)
    if not batch.ended():
        raise HTTPException(400, f"batch {batch_id} is still in progress")
    lines = [
        line
        if batch.canceled_at is None
        else {"custom_id": line["custom_id"], "result": {"type": "canceled"}}
        for line in batch.results
    ]
    jsonl = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    return Response(jsonl, 200, media_type="application/binary")


@batches.post("/{batch_id}/cancel", summary="Cancel a Message Batch", response_model=None)
async def cancel_batch(request: Request, batch_id: str) -> Response:
    batch = _find(request, batch_id)
    if not batch.ended():
        batch.canceled_at = datetime.now(UTC)
    return Response(orjson.dumps(batch.to_json(str(request.base_url))), 200)
