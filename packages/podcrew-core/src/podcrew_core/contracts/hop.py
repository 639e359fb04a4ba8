"""What an internal call carries into the service it reaches: the run's remaining deadline
and the share of the run's retry budget this hop may spend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from podcrew_core.contracts.budget import BUDGET_HEADER, BudgetLimits
from podcrew_core.contracts.deadline import DEADLINE_HEADER, RETRY_BUDGET_HEADER, Deadline
from podcrew_core.contracts.errors import BadRequest

# Less time than this cannot cover even one LLM call: refuse instead of starting.
MIN_REMAINING_S = 0.05


@dataclass
class RetryBudget:
    """Retries one run may still spend, across all its LLM calls in this process.

    A run's budget crosses hops as a header (`x-podcrew-retry-budget`): the orchestrator
    splits what is left among the calls it fans out and subtracts what each reports back,
    so a fault storm costs at most the budget, however wide the fan-out.
    """

    remaining: int
    spent: int = 0

    def try_spend(self) -> bool:
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        self.spent += 1
        return True


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
