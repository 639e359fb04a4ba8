"""What LLM tokens cost: a price table per model, in US dollars per million tokens.

Defaults are Anthropic's list prices for current Claude models; override them with
`PODCREW_LLM_PRICES` (JSON). Cache writes are priced at 1.25 times input (5-minute cache), cache
reads at 0.1 times input, unless a model's entry says otherwise. A call answered through the
Message Batches API costs `BATCH_RATE` of that, every kind of token alike.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from podcrew_core.contracts.schemas import Usage

_MTOK = 1_000_000
BATCH_RATE = 0.5


class ModelPrice(BaseModel):
    input: float = Field(ge=0, description="$ per million input tokens")
    output: float = Field(ge=0, description="$ per million output tokens")
    cache_write: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)

    def cost(self, usage: Usage) -> float:
        cache_write = self.cache_write if self.cache_write is not None else self.input * 1.25
        cache_read = self.cache_read if self.cache_read is not None else self.input * 0.1
        return (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * cache_write
            + usage.cache_read_input_tokens * cache_read
        ) / _MTOK


DEFAULT_PRICES: dict[str, ModelPrice] = {
    "claude-haiku-4-5": ModelPrice(input=1.0, output=5.0),
    "claude-sonnet-4-5": ModelPrice(input=3.0, output=15.0),
    "claude-sonnet-4": ModelPrice(input=3.0, output=15.0),
    "claude-opus-4-5": ModelPrice(input=5.0, output=25.0),
    "claude-opus-4-1": ModelPrice(input=15.0, output=75.0),
    "claude-3-5-haiku": ModelPrice(input=0.8, output=4.0),
}


class PriceTable:
    """Looks a model up by exact name, then by the longest known prefix (so a dated snapshot
    such as `claude-haiku-4-5-20251001` is priced as its family); unknown models get the
    fallback price, never zero, so budgets stay conservative."""

    def __init__(self, prices: dict[str, ModelPrice], fallback: ModelPrice) -> None:
        self.prices = prices
        self.fallback = fallback

    def price(self, model: str) -> ModelPrice:
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name)]
        return self.prices[max(matches, key=len)] if matches else self.fallback

    def cost(self, model: str, usage: Usage, *, batch: bool = False) -> float:
        """What `usage` of `model` costs, at the batch rate for a batched call."""
        cost = self.price(model).cost(usage)
        return cost * BATCH_RATE if batch else cost
