"""Named, versioned prompt sets: what every agent sends a model, under one version string.

A prompt set is a name and the exact texts and tool definitions an agent sends; its version
is `<name>:<hash>`, the first `VERSION_HASH_CHARS` hex digits of the SHA-256 of those texts
and definitions (canonical JSON, tools in the order offered). Any change to a prompt, to a
tool's name, description or input schema, or to which tools are offered, is a new version;
anything else (a refactor, a reformatted module) keeps it. Each service builds its set at
import, so the version is known before the first request and is the same in every replica
of one build.

Tools can be offered per call (tools discovered at run time): `PromptSet.offering` hashes
the definitions actually offered, at offer time, and remembers the few sets it has seen, so
offering the same tools again costs a dictionary lookup, not a hash.

A run combines the versions its stages used (`combine_versions`): `planner:…,research:…,
writer:…`, sorted, each distinct version once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from podcrew_core.llm.types import ToolSpec

VERSION_HASH_CHARS = 12
# How many distinct tool offerings one set remembers; beyond it the memory starts again, so a
# process offering ever-changing tools holds a bounded number of sets.
MAX_REMEMBERED_OFFERINGS = 32


def _digest(texts: Mapping[str, str], tools: Sequence[ToolSpec]) -> str:
    document: dict[str, Any] = {
        "texts": dict(sorted(texts.items())),
        "tools": [tool.model_dump(mode="json") for tool in tools],
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_HASH_CHARS]


@dataclass(frozen=True)
class PromptSet:
    """The texts (by role: `system`, `closing`, …) and tool definitions one agent sends a
    model, and their version. `tools` are the ones offered on every call."""

    name: str
    texts: Mapping[str, str]
    tools: tuple[ToolSpec, ...] = ()
    version: str = field(init=False)
    _offerings: dict[tuple[int, ...], tuple[tuple[ToolSpec, ...], PromptSet]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "version", f"{self.name}:{_digest(self.texts, self.tools)}")

    def offering(self, tools: Sequence[ToolSpec]) -> PromptSet:
        """This set with `tools` offered too, before its own: its version covers them."""
        if not tools:
            return self
        key = tuple(map(id, tools))
        known = self._offerings.get(key)
        # The remembered specs are kept alive with their ids, so an id cannot name another
        # spec while it is remembered.
        if known is not None:
            return known[1]
        if len(self._offerings) >= MAX_REMEMBERED_OFFERINGS:
            self._offerings.clear()
        offered = PromptSet(self.name, self.texts, (*tools, *self.tools))
        self._offerings[key] = (tuple(tools), offered)
        return offered


def combine_versions(versions: Iterable[str | None]) -> str | None:
    """One string for the versions a run used: distinct, sorted, comma-separated; None when
    none is known."""
    distinct = sorted({v for v in versions if v})
    return ",".join(distinct) or None
