"""WriteTurns (db/write_turns.py): a process's SQLite writers served in the order they came,
each at once as the one before gives its turn back, a wait bounded, and no turn lost to a
cancelled waiter."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from glimpse.db.failures import try_again_soon
from glimpse.db.write_turns import WriteTurns


async def test_writers_take_their_turns_in_the_order_they_came() -> None:
    turns = WriteTurns()
    order: list[int] = []
    await turns.take(5)

    async def writer(n: int) -> None:
        await turns.take(5)
        order.append(n)
        await asyncio.sleep(0)
        turns.give_back()

    tasks = []
    for n in range(6):
        tasks.append(asyncio.create_task(writer(n)))
        await asyncio.sleep(0)  # each one waiting before the next comes
    assert turns.waiting == 6
    turns.give_back()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3, 4, 5]
    assert turns.waiting == 0
    await turns.take(0)  # free again: taken with no wait at all
    turns.give_back()


async def test_only_one_writer_holds_a_turn_at_a_time() -> None:
    turns = WriteTurns()
    holding = most = 0

    async def writer() -> None:
        nonlocal holding, most
        await turns.take(5)
        holding += 1
        most = max(most, holding)
        await asyncio.sleep(0.001)
        holding -= 1
        turns.give_back()

    await asyncio.gather(*(writer() for _ in range(20)))
    assert most == 1


async def test_a_wait_past_its_bound_is_refused_as_sqlite_refuses_a_busy_write() -> None:
    turns = WriteTurns()
    await turns.take(5)
    with pytest.raises(OperationalError) as refused:
        await turns.take(0.01)
    # The same error as SQLite's busy timeout: a 503 with Retry-After, never a 500.
    assert try_again_soon(refused.value)
    assert turns.waiting == 0
    turns.give_back()
    await turns.take(0)  # the refused waiter did not keep a place in the line
    turns.give_back()


async def test_a_cancelled_waiter_leaves_the_line_and_the_next_one_gets_the_turn() -> None:
    turns = WriteTurns()
    await turns.take(5)
    gone = asyncio.create_task(turns.take(5))
    await asyncio.sleep(0)
    nxt = asyncio.create_task(turns.take(5))
    await asyncio.sleep(0)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    turns.give_back()
    await asyncio.wait_for(nxt, 1)
    turns.give_back()
    await turns.take(0)


async def test_a_turn_handed_to_a_waiter_cancelled_meanwhile_is_passed_on() -> None:
    turns = WriteTurns()
    await turns.take(5)
    unlucky = asyncio.create_task(turns.take(5))
    await asyncio.sleep(0)
    after = asyncio.create_task(turns.take(5))
    await asyncio.sleep(0)
    turns.give_back()  # handed to `unlucky`, which is cancelled before it runs again
    unlucky.cancel()
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    await asyncio.wait_for(after, 1)
    turns.give_back()
    await turns.take(0)  # and nobody holds it now
