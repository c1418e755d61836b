"""The feed's per-viewer memo: answers live exactly their TTL, and the oldest go first."""

from __future__ import annotations

import pytest

from glimpse.feed import memo as memo_module
from glimpse.feed.memo import ViewerMemo


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [100.0]
    monkeypatch.setattr(memo_module.time, "monotonic", lambda: now[0])
    return now


def test_an_answer_lives_its_ttl_and_not_a_moment_more(clock: list[float]) -> None:
    memo = ViewerMemo(ttl_seconds=5)
    memo.put("pulled", 1, [7])
    clock[0] += 4.9
    assert memo.get("pulled", 1) == [7]
    assert memo.get("pulled", 2) is None and memo.get("affinity", 1) is None
    clock[0] += 0.1
    assert memo.get("pulled", 1) is None


def test_a_ttl_of_zero_remembers_nothing(clock: list[float]) -> None:
    memo = ViewerMemo(ttl_seconds=0)
    memo.put("pulled", 1, [7])
    assert memo.get("pulled", 1) is None


def test_the_least_recently_stored_answer_goes_first(clock: list[float]) -> None:
    memo = ViewerMemo(ttl_seconds=60, max_entries=2)
    memo.put("pulled", 1, [1])
    memo.put("pulled", 2, [2])
    memo.put("pulled", 3, [3])
    assert [memo.get("pulled", v) for v in (1, 2, 3)] == [None, [2], [3]]
