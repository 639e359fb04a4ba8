"""What the simulated API answers, what it charges, which faults it injects and what it
remembers; free of HTTP so each piece can be reasoned about on its own.

The answer comes from podcrew's deterministic model (`offline.respond`, which answers from the
tools, schemas, `tool_choice` and messages of the request); this module adds what the real
API guarantees on top of any model: output stops at `max_tokens`, and prompt-cache
accounting follows the `cache_control` marks.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import marshal
import random
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from podcrew_core.llm.offline import respond
from podcrew_core.llm.tokens import CHARS_PER_TOKEN, block_tokens, estimate_tokens
from podcrew_core.llm.types import OutputBlock, StopReason, TextBlock
from podcrew_simulator.ratelimit import AccountLimits
from podcrew_simulator.settings import FAULTS, Fault, FaultProfile, SimulatorSettings
from podcrew_simulator.wire import (
    CacheControl,
    MessagesRequest,
    TextParam,
    ToolParam,
    ToolResultParam,
    ToolUseParam,
    to_llm_request,
)

if TYPE_CHECKING:
    from podcrew_simulator.batches import Batch

_CACHE_TTL_S = {"5m": 300.0, "1h": 3600.0}
_TOOL_TEXTS_KEPT = 1024


@dataclass(frozen=True)
class Answer:
    """The model's reply and its token usage in the API's four counters."""

    content: list[OutputBlock]
    stop_reason: StopReason
    usage: dict[str, int]


# --- prompt caching ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Breakpoint:
    digest: str
    prefix_tokens: int
    ttl_s: float


def _block_text(block: TextParam | ToolUseParam | ToolResultParam) -> str:
    if isinstance(block, TextParam):
        return block.text
    if isinstance(block, ToolUseParam):
        return block.name + json.dumps(block.input, sort_keys=True)
    return block.text()


def prompt_layout(request: MessagesRequest) -> tuple[int, list[_Breakpoint]]:
    """The prompt's input tokens, and a digest of the prefix ending at each `cache_control`.

    The API caches prefixes in the order tools, system, messages, so that is the order the
    prompt is hashed in; the model is part of the key because caches are per model. A
    top-level `cache_control` marks the end of the prompt.
    """
    running = hashlib.sha256(request.model.encode())
    total = 0
    breakpoints: list[_Breakpoint] = []

    def add(kind: str, text: str, mark: CacheControl | None) -> None:
        nonlocal total
        payload = f"{kind}\x00{text}".encode()
        # Length-prefixed so that no two different prompts hash the same.
        running.update(len(payload).to_bytes(8, "big") + payload)
        total += estimate_tokens(text)
        if mark is not None:
            digest = running.copy().hexdigest()
            breakpoints.append(_Breakpoint(digest, total, _CACHE_TTL_S[mark.ttl]))

    for tool in request.tools:
        add("tool", _tool_json(tool), tool.cache_control)
    if isinstance(request.system, str):
        add("system", request.system, None)
    else:
        for text in request.system:
            add("system", text.text, text.cache_control)
    for message in request.messages:
        if isinstance(message.content, str):
            add(message.role, message.content, None)
            continue
        for block in message.content:
            add(f"{message.role}:{block.type}", _block_text(block), block.cache_control)
    # The top-level mark caches the whole prompt, as if its last block carried it.
    mark = request.cache_control
    if mark is not None and (not breakpoints or breakpoints[-1].prefix_tokens < total):
        breakpoints.append(_Breakpoint(running.hexdigest(), total, _CACHE_TTL_S[mark.ttl]))
    return total, breakpoints


def _tool_json(tool: ToolParam) -> str:
    spec = {"name": tool.name, "description": tool.description, "input_schema": tool.input_schema}
    try:
        return _spec_json(marshal.dumps(spec))
    except ValueError:  # a value marshal cannot write, which no JSON request holds
        return json.dumps(spec, sort_keys=True)


@functools.lru_cache(maxsize=_TOOL_TEXTS_KEPT)
def _spec_json(spec: bytes) -> str:
    # A client sends the same tools with every call, and writing out their schemas was the
    # largest part of a research call's layout. Keyed by the marshalled spec: it is quick to
    # make and exact (a JSON key would confuse NaN with null, which `json.dumps` tells
    # apart).
    return json.dumps(marshal.loads(spec), sort_keys=True)  # noqa: S302 - made by _tool_json


class PromptCache:
    """Which prompt prefixes are cached: least recently used first out, each for its TTL."""

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def account(self, breakpoints: list[_Breakpoint]) -> tuple[int, int]:
        """`(cache_creation_input_tokens, cache_read_input_tokens)` for one request.

        The longest prefix already cached is read; the rest, up to the last mark, is written.
        Both refresh the TTL, as reads do on the API.
        """
        if not breakpoints:
            return 0, 0
        now = self._clock()
        read = 0
        for point in reversed(breakpoints):
            expiry = self._expiry.get(point.digest)
            if expiry is not None and expiry > now:
                read = point.prefix_tokens
                break
        created = breakpoints[-1].prefix_tokens - read
        for point in breakpoints:
            self._expiry[point.digest] = now + point.ttl_s
            self._expiry.move_to_end(point.digest)
        while len(self._expiry) > self._max_entries:
            self._expiry.popitem(last=False)
        return created, read

    def clear(self) -> int:
        """Forget every prefix; returns how many there were."""
        count = len(self._expiry)
        self._expiry.clear()
        return count


# --- the answer -------------------------------------------------------------------------


def _within_max_tokens(
    content: list[OutputBlock], stop: StopReason, max_tokens: int
) -> tuple[list[OutputBlock], StopReason, int]:
    """The API never writes more than `max_tokens`: text is cut, an unfinished call dropped."""
    kept: list[OutputBlock] = []
    used = 0
    for block in content:
        tokens = block_tokens(block)
        if used + tokens <= max_tokens:
            kept.append(block)
            used += tokens
            continue
        room = max_tokens - used
        if isinstance(block, TextBlock) and room > 0:
            cut = TextBlock(text=block.text[: room * CHARS_PER_TOKEN])
            kept.append(cut)
            used += block_tokens(cut)
        return kept, "max_tokens", used
    return kept, stop, used


def answer(request: MessagesRequest, cache: PromptCache) -> Answer:
    """The reply to `request`, with its usage; records its cacheable prefixes in `cache`."""
    content, stop = respond(to_llm_request(request))
    content, stop, output_tokens = _within_max_tokens(content, stop, request.max_tokens)
    total, breakpoints = prompt_layout(request)
    created, read = cache.account(breakpoints)
    usage = {
        "input_tokens": total - created - read,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": created,
        "cache_read_input_tokens": read,
    }
    return Answer(content=content, stop_reason=stop, usage=usage)


# --- faults -----------------------------------------------------------------------------


class FaultDice:
    """One uniform draw per call, laid against the fault rates in `FAULTS` order, so each
    rate is exactly its fault's share and a seed replays the same sequence."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - fault injection, not cryptography

    def reseed(self, seed: int | None) -> None:
        """Start the sequence again from `seed` (from the clock when `None`)."""
        self._rng.seed(seed)

    def draw(self, profile: FaultProfile) -> Fault | None:
        """The fault for the next call, or `None` for a normal answer."""
        roll = self._rng.random()
        edge = 0.0
        for fault, rate in profile.rates().items():
            edge += rate
            if roll < edge:
                return fault
        return None


# --- the call log -----------------------------------------------------------------------


@dataclass
class CallRecord:
    """One call to `POST /v1/messages`; `status` stays `None` while it is in flight."""

    id: str
    received_at: float
    model: str | None = None
    stream: bool = False
    finished_at: float | None = None
    duration_s: float | None = None
    status: int | None = None
    fault: Fault | None = None
    usage: dict[str, int] | None = None
    stop_reason: StopReason | None = None
    tools_offered: list[str] = field(default_factory=list)
    tool_choice: dict[str, Any] | None = None
    started: float = field(default_factory=time.perf_counter, repr=False)
    generation: int = field(default=0, repr=False)
    sequence: int = field(default=0, repr=False)  # its place in the log

    def describe(self, request: MessagesRequest) -> None:
        """Fill in what the request asked for."""
        self.model = request.model
        self.stream = request.stream
        self.tools_offered = [t.name for t in request.tools]
        if request.tool_choice is not None:
            self.tool_choice = request.tool_choice.model_dump(exclude_none=True)

    def to_json(self) -> dict[str, Any]:
        """The record as `GET /_sim/calls` lists it."""
        return {
            "id": self.id,
            "model": self.model,
            "stream": self.stream,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
            "duration_s": self.duration_s,
            "status": self.status,
            "fault": self.fault,
            "usage": self.usage,
            "stop_reason": self.stop_reason,
            "tools_offered": self.tools_offered,
            "tool_choice": self.tool_choice,
        }


class CallLog:
    """The last `size` calls, plus running counts that outlive the bounded log.

    A finished call is kept as the JSON that `GET /_sim/calls` lists, not as its record: a
    load test leaves up to hundreds of thousands, and as objects every full garbage
    collection walked them all; bytes the collector does not track.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # By arrival: each call's record while it is in flight, then its JSON.
        self._kept: OrderedDict[int, CallRecord | bytes] = OrderedDict()
        self._sequence = itertools.count()
        self._generation = 0
        self._received = 0
        self._finished = 0
        self._by_status: Counter[str] = Counter()
        self._by_fault: Counter[str] = Counter()
        self._tokens: Counter[str] = Counter()

    def open(self, call_id: str) -> CallRecord:
        """Record a call as it arrives, so in-flight calls are counted too."""
        record = CallRecord(
            id=call_id,
            received_at=time.time(),
            generation=self._generation,
            sequence=next(self._sequence),
        )
        self._kept[record.sequence] = record
        if len(self._kept) > self._size:
            self._kept.popitem(last=False)
        self._received += 1
        return record

    def close(self, record: CallRecord, status: int) -> None:
        """Record how the call ended; only the first close counts."""
        if record.status is not None:
            return
        record.status = status
        record.finished_at = time.time()
        record.duration_s = time.perf_counter() - record.started
        if record.sequence in self._kept:  # neither pushed out of the log nor cleared since
            self._kept[record.sequence] = orjson.dumps(record.to_json())
        # A call that began before a reset belongs to counts that no longer exist.
        if record.generation != self._generation:
            return
        self._finished += 1
        self._by_status[str(status)] += 1
        self._by_fault[record.fault or "none"] += 1
        self._tokens.update(record.usage or {})

    def calls(self) -> list[dict[str, Any]]:
        """The kept calls as JSON, oldest first."""
        calls: list[dict[str, Any]] = orjson.loads(self.calls_json())
        return calls

    def calls_json(self) -> bytes:
        """`calls()` serialized: a JSON array."""
        kept = (
            c if isinstance(c, bytes) else orjson.dumps(c.to_json()) for c in self._kept.values()
        )
        return b"[" + b",".join(kept) + b"]"

    def stats(self) -> dict[str, Any]:
        """Counts since the last reset, by status and by fault, and the tokens used."""
        return {
            "received": self._received,
            "finished": self._finished,
            "in_flight": self._received - self._finished,
            "by_status": dict(sorted(self._by_status.items())),
            "by_fault": {f: self._by_fault[f] for f in ("none", *FAULTS)},
            "usage": dict(sorted(self._tokens.items())),
        }

    def clear(self) -> int:
        """Forget every call and reset the counts; returns how many calls were kept."""
        count = len(self._kept)
        self._kept.clear()
        self._generation += 1
        self._received = self._finished = 0
        self._by_status.clear()
        self._by_fault.clear()
        self._tokens.clear()
        return count


class Simulator:
    """Everything one simulated API remembers between calls."""

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self.profile = settings.fault_profile()
        self.dice = FaultDice(self.profile.seed)
        self.cache = PromptCache(settings.cache_entries)
        self.calls = CallLog(settings.call_log_size)
        # Message Batches by id (`podcrew_simulator.batches`), kept until the process ends.
        self.batches: dict[str, Batch] = {}
        self.limits = AccountLimits()

    def update_profile(self, changes: dict[str, Any]) -> FaultProfile:
        """Apply `changes` to the fault profile, validated as at startup (`ValidationError`)."""
        profile = FaultProfile.model_validate(self.profile.model_dump() | changes)
        self.profile = profile
        if "seed" in changes:
            self.dice.reseed(profile.seed)
        return profile
