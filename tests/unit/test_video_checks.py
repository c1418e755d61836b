"""Room for the upload-time video checks (posts/video_checks.py), with a stand-in for the
decoding child: how many run, how many wait, and when a slot is free again."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from glimpse.errors import Unavailable
from glimpse.media import decoding
from glimpse.media.sniff import MediaType
from glimpse.posts import video_checks
from glimpse.posts.video_checks import CheckAllowance, VideoCheckSlots

BUDGET = decoding.DecodeBudget(cpu_seconds=1, memory_bytes=2**30, timeout_seconds=1)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[str]]:
    """Checks that run until the event is set, recording the threads they ran in."""
    release = threading.Event()
    threads: list[str] = []

    def probe(path: Path, media_type: MediaType, budget: Any) -> str:
        threads.append(threading.current_thread().name)
        release.wait(30)
        return path.name

    monkeypatch.setattr(decoding, "probe_video_in_child", probe)
    return release, threads


async def _started(threads: list[str], count: int) -> None:
    async with asyncio.timeout(30):
        while len(threads) < count:
            await asyncio.sleep(0.01)


async def test_past_the_slots_and_the_queue_a_check_is_refused_busy(
    held: tuple[threading.Event, list[str]],
) -> None:
    release, threads = held
    slots = VideoCheckSlots(concurrency=2, queue=1)
    running = [
        asyncio.ensure_future(slots.probe(Path(n), MediaType.MP4, BUDGET, CheckAllowance()))
        for n in "ab"
    ]
    await _started(threads, 2)
    waiting = asyncio.ensure_future(slots.probe(Path("c"), MediaType.MP4, BUDGET, CheckAllowance()))
    await asyncio.sleep(0.05)
    with pytest.raises(Unavailable) as busy:
        await slots.probe(Path("d"), MediaType.MP4, BUDGET, CheckAllowance())
    assert busy.value.code == "busy" and busy.value.headers["Retry-After"]
    release.set()
    assert [await t for t in (*running, waiting)] == ["a", "b", "c"]
    # In threads of their own, never the default pool's that the rest of the API waits in.
    assert all(name.startswith("glimpse-video-check") for name in threads)
    slots.close()


async def test_a_request_gone_mid_check_keeps_its_slot_until_the_check_ends(
    held: tuple[threading.Event, list[str]],
) -> None:
    # A client that hangs up does not stop the decoding child: its slot must stay taken, or
    # clients that upload and hang up could start any number of checks.
    release, threads = held
    slots = VideoCheckSlots(concurrency=1, queue=0)
    gone = asyncio.ensure_future(slots.probe(Path("a"), MediaType.MP4, BUDGET, CheckAllowance()))
    await _started(threads, 1)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    with pytest.raises(Unavailable):
        await slots.probe(Path("b"), MediaType.MP4, BUDGET, CheckAllowance())
    release.set()
    async with asyncio.timeout(30):
        while True:
            try:
                assert await slots.probe(Path("c"), MediaType.MP4, BUDGET, CheckAllowance()) == "c"
                break
            except Unavailable:
                await asyncio.sleep(0.01)
    slots.close()


async def test_a_request_s_checks_share_one_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each crafted file of a 20-file post could take its whole budget: together they get the
    # request's allowance, so a post holds a slot for at most that long.
    now = [0.0]
    budgets: list[decoding.DecodeBudget] = []

    def slow_probe(path: Path, media_type: MediaType, budget: decoding.DecodeBudget) -> str:
        budgets.append(budget)
        now[0] += 6.0  # as if it ran into its budget
        return path.name

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return now[0]

    monkeypatch.setattr(decoding, "probe_video_in_child", slow_probe)
    monkeypatch.setattr(video_checks, "time", Clock)
    per_file = decoding.DecodeBudget(cpu_seconds=5, memory_bytes=2**30, timeout_seconds=10)
    slots, allowance = VideoCheckSlots(concurrency=1, queue=0), CheckAllowance(15.0)
    for name in "ab":
        assert await slots.probe(Path(name), MediaType.MP4, per_file, allowance) == name
    await slots.probe(Path("c"), MediaType.MP4, per_file, allowance)
    assert [(b.timeout_seconds, b.cpu_seconds) for b in budgets] == [(10, 5), (9, 5), (3, 3)]
    with pytest.raises(decoding.DecodeBudgetExceeded):
        await slots.probe(Path("d"), MediaType.MP4, per_file, allowance)
    slots.close()


async def test_a_check_that_could_not_start_gives_its_turn_back(
    held: tuple[threading.Event, list[str]],
) -> None:
    # A request whose allowance is spent, or a pool shut down at exit: no check runs, and the
    # one slot must be free for the next request (not held until the process ends).
    release, threads = held
    release.set()
    slots = VideoCheckSlots(concurrency=1, queue=0)
    spent = CheckAllowance(0.0)
    for _ in range(3):
        with pytest.raises(decoding.DecodeBudgetExceeded):
            await slots.probe(Path("a"), MediaType.MP4, BUDGET, spent)
    assert await slots.probe(Path("b"), MediaType.MP4, BUDGET, CheckAllowance()) == "b"
    slots.close()
    for _ in range(3):
        with pytest.raises(RuntimeError):  # the pool's refusal, each time: never 503 busy
            await slots.probe(Path("c"), MediaType.MP4, BUDGET, CheckAllowance())
    assert len(threads) == 1  # only "b" ran
