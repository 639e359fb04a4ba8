"""`batch_deltas`: the same text in fewer pieces, at most one per interval, on time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Sequence

import pytest

from podcrew_core.runtime.batching import batch_deltas


class Result:
    """A source's final item that is not text."""


Script = Sequence[tuple[float, "str | Result"]]


async def _source(script: Script, fail: Exception | None = None) -> AsyncIterator[str | Result]:
    """Each item after a pause of its own (seconds); then `fail`, if given."""
    for pause_s, item in script:
        await asyncio.sleep(pause_s)
        yield item
    if fail is not None:
        raise fail


async def _collect(
    source: AsyncIterator[str | Result], interval_s: float
) -> list[tuple[float, str | Result]]:
    """Each piece with the time it came, in seconds from the start."""
    started = time.monotonic()
    return [(time.monotonic() - started, item) async for item in batch_deltas(source, interval_s)]


async def test_the_first_delta_goes_at_once_and_the_rest_once_per_interval() -> None:
    words = [f"w{n} " for n in range(40)]
    pieces = await _collect(_source([(0.005, w) for w in words]), 0.05)
    texts = [p for _, p in pieces]
    assert "".join(texts) == "".join(words)  # the same text, exactly
    assert texts[0] == words[0]  # not held back
    assert pieces[0][0] < 0.04
    assert len(texts) < len(words) / 3  # ~one piece per 50 ms, not one per delta
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(pieces)]
    assert all(gap >= 0.045 for gap in gaps[:-1]), gaps  # the rest, at the end, may be sooner


async def test_held_text_goes_out_when_its_interval_ends_though_the_source_is_quiet() -> None:
    script: Script = [(0.0, "one "), (0.01, "two "), (0.01, "three "), (0.6, "four")]
    pieces = await _collect(_source(script), 0.1)
    assert [p for _, p in pieces] == ["one ", "two three ", "four"]
    assert pieces[1][0] < 0.3  # at the end of its interval, not when "four" came


async def test_a_result_is_passed_on_at_once_after_the_text_before_it() -> None:
    result = Result()
    script: Script = [(0.0, "one "), (0.01, "two"), (0.01, result)]
    pieces = await _collect(_source(script), 5.0)
    assert [p for _, p in pieces] == ["one ", "two", result]
    assert pieces[-1][0] < 1.0  # neither the text nor the result waited out the interval


async def test_text_read_before_a_failure_goes_out_before_it() -> None:
    got: list[str | Result] = []
    script: Script = [(0.0, "one "), (0.01, "two")]

    async def read() -> None:
        async for item in batch_deltas(_source(script, ConnectionError("stream broke")), 5.0):
            got.append(item)

    with pytest.raises(ConnectionError, match="stream broke"):
        await read()
    assert got == ["one ", "two"]


async def test_no_interval_passes_every_item_on_as_it_comes() -> None:
    result = Result()
    script: Script = [(0.0, "a"), (0.0, "b"), (0.0, ""), (0.0, result)]
    assert [p for _, p in await _collect(_source(script), 0)] == ["a", "b", "", result]


async def test_closing_early_stops_reading_the_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[str]:
        try:
            while True:
                yield "x"
                await asyncio.sleep(0.01)
        finally:
            closed.set()

    async with contextlib.aclosing(batch_deltas(endless(), 0.05)) as pieces:
        async for piece in pieces:
            assert piece == "x"
            break
    assert closed.is_set()
