"""What one run may spend: its token and cost limits and the daily caps that also bind it,
carried to every hop in the `x-podcrew-budget` header."""

from __future__ import annotations

from pydantic import BaseModel, ValidationError

from podcrew_core.contracts.errors import BadRequest

BUDGET_HEADER = "x-podcrew-budget"


class BudgetLimits(BaseModel):
    """What one run may spend, and the daily caps that also bind it."""

    run_id: str
    tenant: str
    max_tokens: int
    max_cost_usd: float
    tenant_daily_tokens: int
    tenant_daily_cost_usd: float
    global_daily_cost_usd: float
    key_prefix: str = "podcrew"  # the worker's Redis key prefix, so every hop counts alike

    def header(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_header(cls, value: str) -> BudgetLimits:
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise BadRequest(f"{BUDGET_HEADER} is not a valid budget") from exc
