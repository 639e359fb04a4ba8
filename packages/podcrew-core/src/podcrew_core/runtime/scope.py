"""The hop a task serves, opened once and read from one place.

`open_hop` makes a hop (`podcrew_core.contracts.hop.Hop`) the current one for the task that
serves it and everything it starts: the worker opens a run's hop, each agent the hop its
caller sent. Underneath, every reader asks `current_hop()`: the LLM wrappers for the deadline
(each call's timeout, whether a retry still fits) and the retry budget, the budget check for
the spend scope, the research loop's tools for the time they may take. One context variable
holds it all, so nothing is passed one way here and another way there.

A failure that leaves an opened hop says how many retries the hop spent (`retries` in its
problem body), so the caller charges them to the run's budget as it does those of an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from podcrew_core.contracts.errors import DeadlineExceeded, PodcrewError
from podcrew_core.contracts.hop import Hop, Priority
from podcrew_core.runtime.ledger import BudgetScope, Ledger


@dataclass(frozen=True, slots=True)
class _Served:
    hop: Hop
    spend: BudgetScope | None


_current: ContextVar[_Served | None] = ContextVar("podcrew_hop", default=None)


def current_hop() -> Hop | None:
    """The hop this task serves, if one was opened."""
    served = _current.get()
    return served.hop if served is not None else None


def current_priority() -> Priority:
    """The priority of the run this task serves; `interactive` outside a run."""
    served = _current.get()
    return served.hop.priority if served is not None else "interactive"


def current_spend() -> BudgetScope | None:
    """Where this task's LLM calls check and charge their spend, if anywhere."""
    served = _current.get()
    return served.spend if served is not None else None


def time_left(cap_s: float) -> float:
    """Seconds a step may take: `cap_s`, or less if the current hop has less left."""
    hop = current_hop()
    return cap_s if hop is None else min(cap_s, hop.deadline.remaining())


@contextmanager
def hop_context(hop: Hop, ledger: Ledger | None = None) -> Iterator[Hop]:
    """Make `hop` the current one for the block, its spend counted where a ledger is at
    hand. The block is not bounded by the deadline: use `open_hop`, except in a stream's
    generator, which cannot hold a timeout across its yields."""
    spend = BudgetScope(ledger, hop.limits) if ledger and hop.limits else None
    token = _current.set(_Served(hop, spend))
    try:
        yield hop
    except PodcrewError as error:
        if hop.retries.spent:
            error.extra.setdefault("retries", hop.retries.spent)
        raise
    finally:
        _current.reset(token)


@asynccontextmanager
async def open_hop(hop: Hop, ledger: Ledger | None = None, *, what: str) -> AsyncIterator[Hop]:
    """`hop_context`, with the block bounded by the hop's deadline: when it passes, the
    block is cancelled and `DeadlineExceeded` says that `what` did not finish in time."""
    budget_s = hop.deadline.remaining()
    bound = asyncio.timeout(budget_s)
    with hop_context(hop, ledger):
        try:
            async with bound:
                yield hop
        except TimeoutError as exc:
            if not bound.expired():
                raise  # a timeout of the block's own, not the deadline
            # Whole seconds as the deadline was set (a run's 300 s arrive here as 299.99):
            # fractions only for a hop that had less than half a second.
            within = f"{budget_s:.0f}s" if budget_s >= 0.5 else f"{budget_s:.2f}s"
            raise DeadlineExceeded(f"{what} did not finish within {within}") from exc
