"""The password hasher's bounded wait line: past it, callers are refused at once (503)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from glimpse.accounts.passwords import PasswordHasher
from glimpse.errors import Throttled, Unavailable
from glimpse.throttling import SignInGuard, Throttle


async def test_callers_past_the_wait_line_get_unavailable_at_once() -> None:
    hasher = PasswordHasher(concurrency=1, queue=1)
    stored = await hasher.hash("correct horse")
    outcomes = await asyncio.gather(
        *(hasher.verify(stored, "correct horse") for _ in range(5)), return_exceptions=True
    )
    # One hashes, one waits for its slot, the other three are turned away.
    assert outcomes.count(True) == 2, outcomes
    refused = [o for o in outcomes if isinstance(o, Unavailable)]
    assert len(refused) == 3, outcomes
    assert all(int(e.headers["Retry-After"]) >= 1 for e in refused if e.headers)
    assert all(e.status == 503 for e in refused)


async def test_the_wait_line_frees_up_as_hashes_finish() -> None:
    hasher = PasswordHasher(concurrency=1, queue=0)
    stored = await hasher.hash("correct horse")
    # One at a time is never refused: each finds the slot free.
    for _ in range(3):
        assert await hasher.verify(stored, "correct horse")
    first, second = await asyncio.gather(
        hasher.verify(stored, "x"), hasher.verify(stored, "y"), return_exceptions=True
    )
    assert first is False and isinstance(second, Unavailable)
    assert await hasher.verify(stored, "correct horse")


async def test_unknown_user_is_verified_against_the_dummy_hash() -> None:
    hasher = PasswordHasher(concurrency=1)
    assert await hasher.verify(None, "not a real password") is False


# an attempt marked neither succeeded nor failed (hasher busy) spends no failure budget.
async def test_unmarked_sign_in_attempts_are_not_counted() -> None:
    throttle = Throttle("signin_failures=1/minute")
    guard = SignInGuard(throttle)
    try:
        for _ in range(3):
            async with guard.attempt("ada", "192.0.2.1"):
                pass  # say, the hasher answered 503
        async with guard.attempt("ada", "192.0.2.1") as attempt:
            attempt.failed()
        with pytest.raises(Throttled):
            async with guard.attempt("ada", "192.0.2.1"):
                pass
    finally:
        await throttle.close()


# a verify cancelled mid-hash (client went away) gives its slot back.
async def test_a_cancelled_verify_releases_its_slot() -> None:
    hasher = PasswordHasher(concurrency=1, queue=0)
    stored = await hasher.hash("correct horse")
    task = asyncio.create_task(hasher.verify(stored, "correct horse"))
    await asyncio.sleep(0.005)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)  # the cancelled thread finishes
    assert await hasher.verify(stored, "correct horse") is True


async def test_a_failure_that_cannot_be_counted_still_gives_its_place_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    throttle = Throttle("signin_failures=5/minute")
    guard = SignInGuard(throttle)

    async def storage_down(*args: object) -> None:
        raise RuntimeError("the budget's storage went away")

    try:
        monkeypatch.setattr(throttle, "hit", storage_down)
        with pytest.raises(RuntimeError):
            async with guard.attempt("ada", "192.0.2.1") as attempt:
                attempt.failed()
        assert guard._in_flight == {}
    finally:
        await throttle.close()
