"""The retry policy and the bound on runs in flight."""

from __future__ import annotations

import random

import pytest

from podcrew_operator.retry import MAX_RETRY_AFTER_S, delay_s, next_poll_s
from podcrew_operator.slots import Slots


def test_retry_after_wins_and_is_bounded() -> None:
    assert delay_s(0, 7.0, base_s=1, max_s=60) == 7.0
    assert delay_s(5, 0.0, base_s=1, max_s=60) == 0.0
    assert delay_s(0, 86400.0, base_s=1, max_s=60) == MAX_RETRY_AFTER_S


def test_backoff_is_jittered_exponential_and_capped() -> None:
    rng = random.Random(1)
    for attempt in range(12):
        wait = delay_s(attempt, None, base_s=1.0, max_s=8.0, rng=rng)
        assert 0.1 <= wait <= min(8.0, 2**attempt)
    waits = {round(delay_s(3, None, base_s=1.0, max_s=8.0, rng=rng), 3) for _ in range(20)}
    assert len(waits) > 10  # jitter: a crowd does not retry in step


def test_polling_slows_down_while_nothing_changes() -> None:
    wait = 1.0
    seen = []
    for _ in range(8):
        wait = next_poll_s(wait, changed=False, first_s=1.0, max_s=10.0)
        seen.append(wait)
    assert seen == sorted(seen) and seen[-1] == 10.0
    assert next_poll_s(10.0, changed=True, first_s=1.0, max_s=10.0) == 1.0


def test_slots_count_the_cluster_and_this_process() -> None:
    slots = Slots(2)
    assert slots.try_take("a", known=[])
    assert slots.try_take("b", known=["a"])
    assert not slots.try_take("c", known=["a", "b"])
    assert slots.try_take("a", known=["a", "b"])  # holding one already
    # Known from the cluster (another operator's run before a restart) counts too.
    slots.release("a")
    slots.release("b")
    assert not slots.try_take("c", known=["x", "y"])
    assert slots.try_take("c", known=["x"])
    slots.hold("d")  # submitted before: counted whatever the bound
    assert slots.in_flight(["x"]) == 3
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)
