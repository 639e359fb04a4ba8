"""The one problem codec: an error becomes an RFC 9457 `application/problem+json` body, and
the body becomes the same error again on the calling side of a hop.

`to_problem` writes the error's `type` (its slug under `PROBLEM_BASE`), title, status,
detail and `retryable`, plus its extension members. `from_problem` rebuilds the class
registered under the slug (`PodcrewError.__init_subclass__`), so a budget spent in an agent
is `BudgetExceeded` in the worker and a refused LLM request stays `LLMRejected`, never
retried. An answer this process cannot read as one of its errors (an unknown slug, a proxy's
page) becomes `UnknownProblem`, which keeps its status and the retryability the body states,
else `retryable` (the caller's verdict on the status, see `runtime.resilience`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from podcrew_core.contracts.errors import (
    PROBLEM_BASE,
    PodcrewError,
    UnknownProblem,
    UpstreamError,
    error_class,
)

# The members the codec writes itself; everything else in a body is an extension member.
_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "retryable"})
_TEXT_DETAIL_CHARS = 200


def to_problem(error: PodcrewError, instance: str | None = None) -> dict[str, Any]:
    """The problem document of `error`, extension members (`error.extra`) included."""
    body: dict[str, Any] = {
        "type": error.type_uri,
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "retryable": error.retryable,
    }
    if instance:
        body["instance"] = instance
    body.update(error.extra)
    return body


def _document(body: bytes | str | Mapping[str, Any] | None) -> tuple[dict[str, Any], str]:
    """The body as a JSON object (empty if it is none) and, failing that, its text."""
    if isinstance(body, Mapping):
        return dict(body), ""
    if body is None:
        return {}, ""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    return (parsed, "") if isinstance(parsed, dict) else ({}, text)


def from_problem(
    status: int | None,
    body: bytes | str | Mapping[str, Any] | None,
    *,
    headers: Mapping[str, str] | None = None,
    retryable: bool = False,
) -> PodcrewError:
    """The error an answer of another podcrew service stands for.

    `status` is the answer's HTTP status (None: the one the body states, for a problem sent
    inside a stream); `headers` are the answer's, of which `Retry-After` is kept with the
    error; `retryable` is what an answer that does not say is taken to mean.
    """
    document, text = _document(body)
    kind = str(document.get("type", ""))
    slug = kind.removeprefix(PROBLEM_BASE) if kind.startswith(PROBLEM_BASE) else ""
    code = status if status is not None else int(document.get("status") or UpstreamError.status)
    detail = str(document.get("detail") or document.get("title") or text[:_TEXT_DETAIL_CHARS])
    detail = detail or f"HTTP {code}"
    cls = error_class(slug) if slug else None
    error = (
        cls(detail)
        if cls is not None
        else UnknownProblem(
            detail,
            status=code,
            slug=slug or UpstreamError.slug,
            title=str(document.get("title") or UpstreamError.title),
            retryable=retryable,
        )
    )
    error.extra = {k: v for k, v in document.items() if k not in _MEMBERS}
    advice = next((v for k, v in (headers or {}).items() if k.lower() == "retry-after"), None)
    if advice is not None:
        error.headers = {"Retry-After": advice}
    said = document.get("retryable")
    if isinstance(said, bool):
        error.retryable = said
    return error
