"""Admission control: a full service makes callers wait, visibly, no longer than their
deadline."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from podcrew_core.deadline import Deadline
from podcrew_core.errors import Overloaded
from podcrew_research.admission import Slots


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_waiter_gets_the_slot_when_it_frees() -> None:
    slots = Slots(1)
    order: list[str] = []

    async def worker(name: str, hold_s: float) -> None:
        async with slots.hold(Deadline.after(5)):
            order.append(name)
            await asyncio.sleep(hold_s)

    first = asyncio.create_task(worker("first", 0.05))
    await asyncio.sleep(0)
    second = asyncio.create_task(worker("second", 0))
    await asyncio.sleep(0.01)
    assert gauge("podcrew_research_queue_depth") == 1
    assert gauge("podcrew_research_in_progress") == 1
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert gauge("podcrew_research_queue_depth") == 0
    assert gauge("podcrew_research_in_progress") == 0


async def test_waiting_past_the_deadline_is_overloaded() -> None:
    slots = Slots(1)
    async with slots.hold(Deadline.after(5)):
        with pytest.raises(Overloaded):
            async with slots.hold(Deadline.after(0.02)):
                raise AssertionError("must not get a slot")
    assert gauge("podcrew_research_queue_depth") == 0
    async with slots.hold(Deadline.after(0.02)):  # the slot was released
        pass
