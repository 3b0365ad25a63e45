"""A flag is set, cleared and waited for as an asyncio.Event is, by one waiter at a time."""

from __future__ import annotations

import asyncio

import pytest

from kennel.flags import Flag


async def test_a_set_flag_lets_its_waiter_through_until_cleared() -> None:
    flag = Flag()
    waiting = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    assert not waiting.done() and not flag.is_set()
    flag.set()
    await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(flag.wait(), 1)  # still set: no wait at all
    flag.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(flag.wait(), 0.05)


async def test_a_waiter_that_gave_up_leaves_the_flag_usable() -> None:
    flag = Flag()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await flag.wait()
    flag.set()
    await asyncio.wait_for(flag.wait(), 1)


async def test_a_second_waiter_at_once_is_a_mistake() -> None:
    flag = Flag()
    first = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="one waiter"):
        await flag.wait()
    flag.set()
    await asyncio.wait_for(first, 1)
