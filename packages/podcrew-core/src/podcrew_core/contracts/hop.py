"""The one carrier of a run's context from one process to the next: the `Hop`.

A hop names the run and the scope its spend is counted in (the limits' run and tenant), and
carries what is left of the run's deadline, the share of the run's retry budget the call may
spend, and the spend limits. It travels as headers (`to_headers` / `from_headers`) and
nothing else: where the spend counters live is the ledger's business, never the wire's.
Inside a process the hop being served is opened once (`podcrew_core.runtime.scope.open_hop`)
and read from there by everything underneath.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal, get_args

from pydantic import ValidationError

from podcrew_core.contracts.budget import BudgetLimits
from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import BadRequest

RUN_ID_HEADER = "x-podcrew-run-id"
DEADLINE_HEADER = "x-podcrew-deadline-ms"
RETRY_BUDGET_HEADER = "x-podcrew-retry-budget"
BUDGET_HEADER = "x-podcrew-budget"
PRIORITY_HEADER = "x-podcrew-priority"

Priority = Literal["interactive", "batch"]
"""How a run's LLM calls are served: at once, or through the Message Batches API at half
price (hours at worst; only runs with a long deadline may ask for it). Batch calls also wait
while interactive calls wait for the provider's shared rate limit."""
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
# A batch is answered within minutes when the API is quiet and may take hours when it is not:
# below this a batch run would mostly fail its deadline, so it is refused at submission.
MIN_BATCH_DEADLINE_S = 600.0

# Less time than this cannot cover even one LLM call: refuse instead of starting.
MIN_REMAINING_S = 0.05


@dataclass
class RetryBudget:
    """Retries one run may still spend: in one process, or in the part of the fan-out a
    call was given (`Hop.share`).

    The orchestrator splits what is left among the calls it fans out and charges back what
    each spent (its own retries of the call and those the agent reports), so a fault storm
    costs at most the budget, however wide the fan-out.
    """

    remaining: int
    spent: int = 0

    def try_spend(self) -> bool:
        """Take one retry, if one is left."""
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        self.spent += 1
        return True

    def charge(self, retries: int) -> None:
        """Count `retries` spent elsewhere on this budget's behalf (by the hop it was sent
        to, or by a share of it)."""
        retries = max(0, retries)
        self.remaining = max(0, self.remaining - retries)
        self.spent += retries


@dataclass(frozen=True, slots=True)
class Hop:
    """A run's context as one call carries it: the run, its deadline, the retries the call
    may spend, the spend limits (None: nothing is counted) and the run's priority."""

    run_id: str | None
    deadline: Deadline
    retries: RetryBudget
    limits: BudgetLimits | None = None
    priority: Priority = "interactive"

    def share(self, retries: int) -> Hop:
        """The hop of one call of a fan-out: the same run, deadline and limits, with
        `retries` of its own to spend (charge them back with `retries.charge`)."""
        return replace(self, retries=RetryBudget(max(0, retries)))

    def to_headers(self) -> dict[str, str]:
        """The headers that carry this hop to the next process."""
        headers = {
            DEADLINE_HEADER: self.deadline.remaining_ms(),
            RETRY_BUDGET_HEADER: str(max(0, self.retries.remaining)),
        }
        if self.run_id is not None:
            headers[RUN_ID_HEADER] = self.run_id
        if self.priority != "interactive":
            headers[PRIORITY_HEADER] = self.priority
        if self.limits is not None:
            headers[BUDGET_HEADER] = self.limits.model_dump_json()
        return headers

    @classmethod
    def from_headers(
        cls,
        headers: Mapping[str, str],
        *,
        default_deadline_s: float,
        default_retries: int,
        what: str,
    ) -> Hop:
        """The caller's hop, with this service's defaults for what it did not send; refuses
        (`DeadlineExceeded`) work that cannot finish in time and malformed headers
        (`BadRequest`)."""
        raw_deadline = headers.get(DEADLINE_HEADER)
        deadline = (
            Deadline.after(default_deadline_s)
            if raw_deadline is None
            else Deadline.from_ms(raw_deadline, DEADLINE_HEADER)
        )
        deadline.require(MIN_REMAINING_S, what)
        raw_retries = headers.get(RETRY_BUDGET_HEADER)
        if raw_retries is not None and not raw_retries.isdigit():
            raise BadRequest(f"{RETRY_BUDGET_HEADER} must be a non-negative integer")
        retries = default_retries if raw_retries is None else int(raw_retries)
        limits = _limits(headers.get(BUDGET_HEADER))
        run_id = headers.get(RUN_ID_HEADER) or (limits.run_id if limits else None)
        if limits is not None and run_id != limits.run_id:
            raise BadRequest(f"{BUDGET_HEADER} is the budget of another run than {run_id}")
        priority = headers.get(PRIORITY_HEADER, "interactive")
        if priority not in PRIORITIES:
            raise BadRequest(f"{PRIORITY_HEADER} must be one of {', '.join(PRIORITIES)}")
        return cls(run_id, deadline, RetryBudget(retries), limits, priority)


def _limits(value: str | None) -> BudgetLimits | None:
    if not value:
        return None
    try:
        return BudgetLimits.model_validate_json(value)
    except ValidationError as exc:
        raise BadRequest(f"{BUDGET_HEADER} is not a valid budget") from exc
