"""Exponential backoff with jitter for failed jobs (backends/queue/base.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.backends.queue.base import death_delay, retry_delay


class FixedRandom(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


MIDDLE = FixedRandom(0.5)  # jitter factor exactly 1


def test_delay_doubles_with_each_attempt() -> None:
    delays = [retry_delay(n, 2.0, 10_000.0, MIDDLE) for n in range(1, 7)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def test_delay_is_capped() -> None:
    assert retry_delay(10, 2.0, 600.0, MIDDLE) == 600.0
    assert retry_delay(50, 2.0, 600.0, MIDDLE) == 600.0


def test_zero_base_means_retry_at_once() -> None:
    assert retry_delay(3, 0.0, 600.0) == 0.0


@pytest.mark.parametrize(("value", "factor"), [(0.0, 0.5), (0.25, 0.75), (0.999999, 1.499999)])
def test_jitter_scales_the_delay_by_half_to_one_and_a_half(value: float, factor: float) -> None:
    assert retry_delay(3, 2.0, 600.0, FixedRandom(value)) == pytest.approx(8.0 * factor)


def test_jobs_that_failed_together_do_not_come_back_together() -> None:
    rng = random.Random(1234)
    delays = [retry_delay(2, 10.0, 600.0, rng) for _ in range(1_000)]
    assert all(10.0 <= d < 30.0 for d in delays)
    assert len(set(delays)) > 990
    assert min(delays) < 12.0 and max(delays) > 28.0


@given(
    attempt=st.integers(min_value=1, max_value=100_000),
    base=st.floats(min_value=0.0, max_value=60.0, allow_subnormal=False),
    cap=st.floats(min_value=0.0, max_value=3600.0, allow_subnormal=False),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_delay_stays_within_jittered_cap_for_any_attempt(
    attempt: int, base: float, cap: float, seed: int
) -> None:
    delay = retry_delay(attempt, base, cap, random.Random(seed))
    assert 0.0 <= delay <= 1.5 * cap
    assert delay >= 0.5 * min(cap, base)


def test_a_job_whose_worker_died_once_is_due_at_once_and_then_backs_off() -> None:
    # One death (a deploy, an OOM kill) says nothing about the job; each further one delays it
    # like a retry, so that a job killing its workers does not take every new worker first.
    delays = [death_delay(n, 2.0, 10_000.0, MIDDLE) for n in range(1, 6)]
    assert delays == [0.0, 2.0, 4.0, 8.0, 16.0]
    assert death_delay(40, 2.0, 30.0, MIDDLE) == 30.0
