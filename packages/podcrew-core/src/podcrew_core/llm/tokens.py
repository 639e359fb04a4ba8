"""Token counts estimated from text, where no tokenizer is at hand.

Used wherever podcrew needs a size before (or without) asking a real model: the cost
estimate of a run, and the usage the deterministic models report.
"""

from __future__ import annotations

import json

from podcrew_core.llm.types import OutputBlock, TextBlock

# About four characters per token, as for English text in Claude's tokenizer.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """The tokens `text` is likely to take: one per `CHARS_PER_TOKEN` characters, at least one."""
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def block_tokens(block: OutputBlock) -> int:
    """The tokens a model spends writing `block`: its text, or its tool input as JSON."""
    return estimate_tokens(block.text if isinstance(block, TextBlock) else json.dumps(block.input))
