"""The problem codec: every podcrew error crosses a hop as a problem body and comes back as
the same class, with its meaning and its retryability."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from podcrew_core.contracts.errors import (
    PROBLEM_BASE,
    BudgetExceeded,
    DeadlineExceeded,
    InvalidModelOutput,
    LLMOverloaded,
    LLMRejected,
    PodcrewError,
    UnknownProblem,
    error_class,
)
from podcrew_core.contracts.problem import from_problem, to_problem
from podcrew_core.runtime.resilience import answer_error, should_retry


def _registered() -> Iterator[type[PodcrewError]]:
    yield PodcrewError
    todo = list(PodcrewError.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if "slug" in cls.__dict__:
            yield cls


@pytest.mark.parametrize("cls", sorted(_registered(), key=lambda c: c.slug), ids=lambda c: c.slug)
def test_every_error_comes_back_as_itself(cls: type[PodcrewError]) -> None:
    sent = cls("what went wrong", budget="run_tokens")
    body = orjson.dumps(to_problem(sent, "/v1/research"))

    received = from_problem(sent.status, body)

    assert type(received) is cls
    assert error_class(cls.slug) is cls
    assert (received.slug, received.status, received.detail) == (
        cls.slug,
        cls.status,
        "what went wrong",
    )
    assert received.retryable is cls.retryable
    assert received.extra == {"budget": "run_tokens"}


def test_the_errors_that_end_a_run_are_not_retryable_across_a_hop() -> None:
    for cls in (LLMRejected, InvalidModelOutput, BudgetExceeded, DeadlineExceeded):
        received = from_problem(cls.status, orjson.dumps(to_problem(cls("no"))))
        assert not should_retry(received), cls.slug
    overloaded = from_problem(502, orjson.dumps(to_problem(LLMOverloaded("busy"))))
    assert isinstance(overloaded, LLMOverloaded) and should_retry(overloaded)


def test_an_unknown_slug_keeps_its_status_and_the_retryability_it_states() -> None:
    body = {
        "type": PROBLEM_BASE + "from-a-newer-service",
        "title": "New",
        "status": 429,
        "detail": "later",
        "retryable": True,
        "limit": 5,
    }
    received = from_problem(429, orjson.dumps(body))
    assert isinstance(received, UnknownProblem)
    assert (received.slug, received.status, received.title, received.detail) == (
        "from-a-newer-service",
        429,
        "New",
        "later",
    )
    assert received.retryable and received.extra == {"limit": 5}
    assert to_problem(received)["type"] == PROBLEM_BASE + "from-a-newer-service"


def test_an_answer_that_is_no_problem_is_judged_by_its_status() -> None:
    page = b"<html><body>502 Bad Gateway</body></html>"
    from_proxy = answer_error(502, page)
    assert isinstance(from_proxy, UnknownProblem)
    assert (from_proxy.slug, from_proxy.status) == ("upstream-error", 502)
    assert from_proxy.detail == page.decode() and should_retry(from_proxy)
    assert not should_retry(answer_error(404, b""))
    assert answer_error(404, b"").detail == "HTTP 404"


def test_what_the_body_says_overrides_the_class() -> None:
    body = to_problem(LLMOverloaded("busy")) | {"retryable": False}
    received = from_problem(502, orjson.dumps(body))
    assert isinstance(received, LLMOverloaded) and not received.retryable


def test_retry_after_is_kept_with_the_error() -> None:
    body = orjson.dumps(to_problem(BudgetExceeded("spent")))
    received = from_problem(402, body, headers={"retry-after": "3", "x-other": "y"})
    assert received.headers == {"Retry-After": "3"}


def test_a_problem_in_a_stream_states_its_own_status() -> None:
    received = from_problem(None, orjson.dumps(to_problem(BudgetExceeded("spent"))).decode())
    assert isinstance(received, BudgetExceeded) and received.status == 402


def test_a_class_of_a_service_is_rebuilt_by_its_slug() -> None:
    class Teapot(PodcrewError):
        status = 418
        slug = "test-teapot"
        title = "A teapot"
        retryable = False

    received = from_problem(418, orjson.dumps(to_problem(Teapot("short and stout"))))
    assert isinstance(received, Teapot) and received.detail == "short and stout"


def test_a_slug_names_one_class() -> None:
    with pytest.raises(TypeError, match="budget-exceeded"):

        class Spent(PodcrewError):
            slug = "budget-exceeded"
