"""Room for the upload-time video checks: a few at once, in threads of their own.

Each check waits on a decoding child for up to its budget (seconds, for a file crafted to be
slow). Waited on from the default thread pool, six of them took every thread the API process
has (2 cores: six), and a photo upload's own header check queued behind them for 18 s. Here they
run in their own small pool, with a short queue in front of it; past that the API says 503
`busy` at once rather than keep a client's request, and its spooled file, waiting.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from glimpse.media import decoding
from glimpse.media.sniff import MediaType
from glimpse.media.video_planning import VideoProbe
from glimpse.wait_line import WaitLine

# When to try again after a refusal for want of room: about one check's time.
BUSY_RETRY_AFTER_SECONDS = 5
# What the checks of one request's videos may take together. A real video's check takes well
# under a second; without this, a post of 20 crafted files would hold a slot for 20 budgets
# (200 s) while other users' uploads waited.
REQUEST_CHECK_SECONDS = 15.0


class CheckAllowance:
    """The time one request's video checks have left between them."""

    def __init__(self, seconds: float = REQUEST_CHECK_SECONDS) -> None:
        self.left = seconds

    def budget(self, per_file: decoding.DecodeBudget) -> decoding.DecodeBudget:
        """`per_file`, cut down to what is left (DecodeBudgetExceeded when nothing is)."""
        if self.left <= 0:
            raise decoding.DecodeBudgetExceeded("this upload's videos took too long to check")
        return dataclasses.replace(
            per_file,
            timeout_seconds=min(per_file.timeout_seconds, self.left),
            cpu_seconds=min(per_file.cpu_seconds, max(1, math.ceil(self.left))),
        )

    def spend(self, seconds: float) -> None:
        self.left -= seconds


class VideoCheckSlots:
    def __init__(self, concurrency: int, queue: int) -> None:
        self._concurrency = max(1, concurrency)
        self._line = WaitLine(
            concurrency,
            queue,
            "The server is checking as many videos as it can; please try again soon.",
            BUSY_RETRY_AFTER_SECONDS,
        )
        self._executor: ThreadPoolExecutor | None = None

    async def probe(
        self,
        path: Path,
        media_type: MediaType,
        budget: decoding.DecodeBudget,
        allowance: CheckAllowance,
    ) -> VideoProbe:
        """`decoding.probe_video_in_child` in a slot of its own, under `budget` and within what
        is left of the request's `allowance` (which the check's time is taken from: time in
        the queue is not); raises what it raises, and Unavailable (503 `busy`) when every slot
        is taken and the queue is full."""
        await self._line.enter()
        try:
            check = asyncio.get_running_loop().run_in_executor(
                self._pool(), _timed_probe, path, media_type, allowance.budget(budget), allowance
            )
        except BaseException:  # (a pool shut down at exit): the turn was never used
            self._line.leave()
            raise
        # The slot is free when the check is over, not when its request is: a client that hangs
        # up mid-check leaves the child working until its budget ends, and that work must count.
        check.add_done_callback(lambda _: self._line.leave())
        return await asyncio.shield(check)

    def _pool(self) -> ThreadPoolExecutor:
        # Made on first use: most API processes never see a video, and no thread starts at import.
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._concurrency, thread_name_prefix="glimpse-video-check"
            )
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


def _timed_probe(
    path: Path, media_type: MediaType, budget: decoding.DecodeBudget, allowance: CheckAllowance
) -> VideoProbe:
    started = time.monotonic()
    try:
        return decoding.probe_video_in_child(path, media_type, budget)
    finally:
        allowance.spend(time.monotonic() - started)
