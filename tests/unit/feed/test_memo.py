"""The feed's per-viewer memo: answers live exactly their TTL, and the oldest go first."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from glimpse.container import Container
from glimpse.feed import memo as memo_module
from glimpse.feed import repository, service
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


async def test_the_large_accounts_a_viewer_follows_are_read_once_a_ttl(
    clock: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """service.pulled_accounts (the route's kept first pages and the feed's reader alike)."""
    reads: list[int] = []

    async def followed_pull_accounts(db: object, viewer_id: int) -> list[int]:
        reads.append(viewer_id)
        return [] if viewer_id == 2 else [7]

    monkeypatch.setattr(repository, "followed_pull_accounts", followed_pull_accounts)
    db = SimpleNamespace(version=lambda: None)  # (PostgreSQL's: no version to trust)
    container = cast(Container, SimpleNamespace(viewer_memo=ViewerMemo(ttl_seconds=5), db=db))
    for _ in range(3):
        assert await service.pulled_accounts(container, 1) == [7]
        assert await service.pulled_accounts(container, 2) == []  # (none is an answer too)
    assert reads == [1, 2]
    clock[0] += 5
    assert await service.pulled_accounts(container, 1) == [7]
    assert reads == [1, 2, 1]


class _Db:
    def __init__(self) -> None:
        self.v = (1, 1)

    def version(self) -> tuple[int, int]:
        return self.v


async def test_the_large_accounts_followed_are_trusted_at_the_version_read_before_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db, reads = _Db(), []

    async def followed_pull_accounts(_: object, viewer_id: int) -> list[int]:
        reads.append(viewer_id)
        if len(reads) == 1:
            db.v = (1, 2)  # a follow committed while they were read
        return [7]

    monkeypatch.setattr(repository, "followed_pull_accounts", followed_pull_accounts)
    container = cast(Container, SimpleNamespace(viewer_memo=ViewerMemo(ttl_seconds=0), db=db))
    for _ in range(3):
        assert await service.pulled_accounts(container, 1) == [7]
    # read again after the commit, then trusted (a TTL of 0 trusts nothing by time)
    assert reads == [1, 1]
