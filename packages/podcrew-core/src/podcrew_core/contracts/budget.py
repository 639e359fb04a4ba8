"""What one run may spend: its token and cost limits and the daily caps that also bind it.

The limits name the run and the tenant whose counters they bind; where those counters live
is the ledger's business (`podcrew_core.runtime.ledger`), never the wire's.
"""

from __future__ import annotations

from pydantic import BaseModel


class BudgetLimits(BaseModel):
    """What one run may spend, and the daily caps that also bind it."""

    run_id: str
    tenant: str
    max_tokens: int
    max_cost_usd: float
    tenant_daily_tokens: int
    tenant_daily_cost_usd: float
    global_daily_cost_usd: float
