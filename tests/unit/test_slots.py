"""The POST path's counting limit: a semaphore's guarantees with a free slot taken in one step."""

from __future__ import annotations

import asyncio

import pytest

from herald.runtime.slots import Slots


async def test_at_most_count_holders_and_waiters_served_in_order() -> None:
    slots = Slots(2)
    order: list[int] = []
    holding = 0
    most = 0

    async def hold(n: int) -> None:
        nonlocal holding, most
        async with slots:
            order.append(n)
            holding += 1
            most = max(most, holding)
            await asyncio.sleep(0.01)
            holding -= 1

    await asyncio.gather(*(hold(n) for n in range(6)))
    assert most == 2 and order == list(range(6)) and (slots.free, slots.held) == (2, 0)


async def test_a_released_slot_goes_to_a_waiter_not_to_a_newcomer() -> None:
    slots = Slots(1)
    assert slots.take() and not slots.take() and slots.held == 1
    waiter = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.release()
    assert not slots.take()  # handed to the waiter already
    await waiter
    slots.release()
    assert slots.free == 1


async def test_a_cancelled_wait_holds_no_slot() -> None:
    slots = Slots(1)
    assert slots.take()
    waiter = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    slots.release()
    assert slots.free == 1 and slots.take()


async def test_a_slot_handed_to_a_cancelled_waiter_is_passed_on() -> None:
    slots = Slots(1)
    assert slots.take()
    first = asyncio.create_task(slots.wait())
    second = asyncio.create_task(slots.wait())
    await asyncio.sleep(0)
    slots.release()  # to `first`, which is cancelled before it runs
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    slots.release()
    assert slots.free == 1
