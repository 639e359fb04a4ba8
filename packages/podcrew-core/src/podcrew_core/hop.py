"""What an internal call carries into the service it reaches: the run's remaining deadline
and the share of the run's retry budget this hop may spend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from podcrew_core.budget import BUDGET_HEADER, BudgetLimits, BudgetScope, Ledger, budget_scope
from podcrew_core.deadline import DEADLINE_HEADER, RETRY_BUDGET_HEADER, Deadline, deadline_scope
from podcrew_core.errors import BadRequest
from podcrew_core.resilience import RetryBudget, retry_budget_scope

# Less time than this cannot cover even one LLM call: refuse instead of starting.
MIN_REMAINING_S = 0.05


@dataclass(frozen=True, slots=True)
class Hop:
    deadline: Deadline
    budget: RetryBudget
    limits: BudgetLimits | None = None


def hop_headers(
    deadline: Deadline, retry_budget: int | None = None, limits: BudgetLimits | None = None
) -> dict[str, str]:
    headers = {DEADLINE_HEADER: deadline.header_value()}
    if retry_budget is not None:
        headers[RETRY_BUDGET_HEADER] = str(max(0, retry_budget))
    if limits is not None:
        headers[BUDGET_HEADER] = limits.header()
    return headers


def read_hop(
    headers: Mapping[str, str],
    *,
    default_deadline_s: float,
    default_retry_budget: int,
    what: str,
) -> Hop:
    """The caller's deadline and retry budget; refuses work that cannot finish in time."""
    deadline = Deadline.from_header(headers.get(DEADLINE_HEADER), default_deadline_s)
    deadline.require(MIN_REMAINING_S, what)
    raw = headers.get(RETRY_BUDGET_HEADER)
    if raw is None:
        retries = default_retry_budget
    elif raw.isdigit():
        retries = int(raw)
    else:
        raise BadRequest(f"{RETRY_BUDGET_HEADER} must be a non-negative integer")
    raw_limits = headers.get(BUDGET_HEADER)
    limits = BudgetLimits.from_header(raw_limits) if raw_limits else None
    return Hop(deadline, RetryBudget(retries), limits)


@contextmanager
def hop_scope(hop: Hop, ledger: Ledger | None = None) -> Iterator[Hop]:
    """Make the hop's deadline, retry budget and spend limits the ones every LLM call in
    this task obeys (spend limits only where a ledger is at hand)."""
    scope = BudgetScope(ledger, hop.limits) if ledger and hop.limits else None
    with deadline_scope(hop.deadline), retry_budget_scope(hop.budget), budget_scope(scope):
        yield hop
