"""WriteTurns (db/write_turns.py), more of its edges: a wait is refused at its own bound (not at
some multiple of it), and a waiter refused, then cancelled before it ran again, gives back
nothing it never held."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.exc import OperationalError

from glimpse.db.write_turns import WriteTurns


async def test_a_wait_is_refused_at_its_bound_while_the_turn_is_still_held() -> None:
    # The holder keeps its turn for up to five times the waiter's bound, and gives it back as
    # soon as the waiter is done. The waiter's timer (the shorter deadline) fires first: it is
    # refused, never handed the turn after a wait of many bounds. (No clock is read here: the
    # event loop orders the two deadlines.)
    turns = WriteTurns()
    await turns.take(5)
    waiter = asyncio.create_task(turns.take(0.05))
    done = asyncio.Event()
    waiter.add_done_callback(lambda _: done.set())
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), 0.25)
    turns.give_back()
    with pytest.raises(OperationalError):
        await waiter
    await turns.take(0)  # and the turn is free: the refused waiter holds nothing
    turns.give_back()


async def test_a_waiter_refused_then_cancelled_before_it_ran_gives_back_nothing() -> None:
    # The waiter's bound expires (its turn answered "no"), and before it runs again its
    # request is cancelled (the client went away). It held no turn: the holder's turn must
    # stay the holder's, not be handed on or freed by the cancelled waiter.
    turns = WriteTurns()
    await turns.take(5)
    refused = asyncio.create_task(turns.take(0))
    await asyncio.sleep(0)
    assert turns.waiting == 1
    while turns.waiting:  # until its bound's timer has answered, in a turn of the loop
        await asyncio.sleep(0)
    assert not refused.done()  # answered, not yet run again
    refused.cancel()
    with pytest.raises(asyncio.CancelledError):
        await refused
    nxt = asyncio.create_task(turns.take(5))
    await asyncio.sleep(0)
    assert not nxt.done()  # still the holder's turn: the next writer waits
    with pytest.raises(OperationalError):
        await turns.take(0)  # and one more is refused, not let in beside the holder
    turns.give_back()
    await asyncio.wait_for(nxt, 1)
    turns.give_back()
    await turns.take(0)
    turns.give_back()
