"""Admission control: a full service makes callers wait, visibly, no longer than their
deadline."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from podcrew_core.contracts.deadline import Deadline
from podcrew_core.contracts.errors import Overloaded
from podcrew_core.runtime.admission import Admission


def depth() -> float:
    labels = {"service": "research-test"}
    return REGISTRY.get_sample_value("podcrew_admission_queue_depth", labels) or 0.0


def in_flight() -> float:
    labels = {"service": "research-test"}
    return REGISTRY.get_sample_value("podcrew_admission_in_flight", labels) or 0.0


async def test_waiter_gets_the_slot_when_it_frees() -> None:
    slots = Admission("research-test", 1, max_queue=4, max_wait_s=10)
    order: list[str] = []

    async def worker(name: str, hold_s: float) -> None:
        async with slots.hold(Deadline.after(5)):
            order.append(name)
            await asyncio.sleep(hold_s)

    first = asyncio.create_task(worker("first", 0.05))
    await asyncio.sleep(0)
    second = asyncio.create_task(worker("second", 0))
    await asyncio.sleep(0.01)
    assert depth() == 1
    assert in_flight() == 1
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert depth() == 0
    assert in_flight() == 0


async def test_waiting_past_the_deadline_is_overloaded() -> None:
    slots = Admission("research-test", 1, max_queue=4, max_wait_s=10)
    async with slots.hold(Deadline.after(5)):
        with pytest.raises(Overloaded):
            async with slots.hold(Deadline.after(0.02)):
                raise AssertionError("must not get a slot")
    assert depth() == 0
    async with slots.hold(Deadline.after(0.02)):  # the slot was released
        pass


async def test_a_full_queue_is_refused_at_once_with_retry_after() -> None:
    slots = Admission("research-test", 1, max_queue=1, max_wait_s=10)
    release = asyncio.Event()

    async def hold() -> None:
        async with slots.hold(Deadline.after(5)):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0.01)
    assert slots.waiting == 1
    with pytest.raises(Overloaded) as refused:
        async with slots.hold(Deadline.after(5)):
            raise AssertionError("must not get a slot")
    assert refused.value.headers["Retry-After"] == "1"
    release.set()
    await asyncio.gather(holder, waiter)
    assert depth() == 0 and in_flight() == 0
