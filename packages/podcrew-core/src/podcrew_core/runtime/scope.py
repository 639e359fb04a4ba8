"""Opening a hop's scopes in the task that serves it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from podcrew_core.contracts.deadline import deadline_scope
from podcrew_core.contracts.hop import Hop
from podcrew_core.runtime.ledger import BudgetScope, Ledger, budget_scope
from podcrew_core.runtime.resilience import retry_budget_scope


@contextmanager
def hop_scope(hop: Hop, ledger: Ledger | None = None) -> Iterator[Hop]:
    """Make the hop's deadline, retry budget and spend limits the ones every LLM call in
    this task obeys (spend limits only where a ledger is at hand)."""
    scope = BudgetScope(ledger, hop.limits) if ledger and hop.limits else None
    with deadline_scope(hop.deadline), retry_budget_scope(hop.budget), budget_scope(scope):
        yield hop
