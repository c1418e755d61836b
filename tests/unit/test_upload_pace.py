"""UploadPace: the deadline and the minimum rate of an upload, on a clock the test moves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.errors import Stalled
from glimpse.posts.upload import UploadPace


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pace(clock: FakeClock, **overrides: float) -> UploadPace:
    options: dict[str, float] = {"deadline": 1800, "min_rate": 10_000, "window": 60, "grace": 10}
    options.update(overrides)
    return UploadPace(
        deadline=options["deadline"],
        min_rate=int(options["min_rate"]),
        window=options["window"],
        grace=options["grace"],
        clock=clock,
    )


def test_a_fast_upload_is_never_stopped_until_the_deadline() -> None:
    clock = FakeClock()
    p = pace(clock)
    for _ in range(1799):
        clock.now += 1
        p.arrived(50_000)
    clock.now += 1
    with pytest.raises(Stalled) as caught:
        p.arrived(50_000)
    assert caught.value.code == "upload_too_slow"
    assert "1800 seconds" in caught.value.message


def test_a_trickle_is_allowed_during_the_grace_period_then_stopped() -> None:
    clock = FakeClock()
    p = pace(clock)
    for _ in range(9):
        clock.now += 1
        p.arrived(1)  # a slow start is forgiven
    clock.now += 1
    with pytest.raises(Stalled) as caught:
        p.arrived(1)
    assert caught.value.code == "upload_too_slow"
    assert "too slowly" in caught.value.message


def test_one_byte_every_40_seconds_is_stopped_at_the_first_byte_after_the_grace() -> None:
    # The row 7: the idle timeout of 60 s restarted with every byte.
    clock = FakeClock()
    p = pace(clock)
    clock.now += 40
    with pytest.raises(Stalled):
        p.arrived(1)


def test_the_rate_is_averaged_over_the_window_not_since_the_start() -> None:
    clock = FakeClock()
    p = pace(clock)
    p.arrived(100_000_000)  # a fast first minute...
    for _ in range(60):
        clock.now += 1
        p.arrived(20_000)
    for _ in range(30):  # ...then a stall that the first minute's average would have hidden
        clock.now += 1
        p.arrived(100)
    clock.now += 1
    with pytest.raises(Stalled):
        for _ in range(30):
            p.arrived(100)
            clock.now += 1


def test_a_zero_minimum_rate_only_keeps_the_deadline() -> None:
    clock = FakeClock()
    p = pace(clock, min_rate=0, deadline=100)
    clock.now += 99
    p.arrived(1)
    clock.now += 1
    with pytest.raises(Stalled):
        p.check()


@given(st.integers(min_value=10_000, max_value=10_000_000), st.floats(min_value=0.01, max_value=5))
def test_any_steady_upload_at_or_above_the_rate_passes(rate: int, step: float) -> None:
    clock = FakeClock()
    p = pace(clock)
    while p.elapsed() < 200:
        clock.now += step
        p.arrived(int(rate * step) + 1)


def test_memory_is_bounded_by_the_buckets_not_the_chunks() -> None:
    clock = FakeClock()
    p = pace(clock)
    for _ in range(100_000):
        clock.now += 0.001
        p.arrived(1000)
    assert len(p._buckets) <= UploadPace.BUCKETS_PER_WINDOW + 1
