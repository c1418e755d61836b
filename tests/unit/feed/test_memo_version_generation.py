"""The large accounts followed (feed/service.pulled_accounts, feed/memo.ViewerMemo) are trusted
at a database version only if it is the very same: the same count of the same quick
connection. Another connection's count (a new thread's, or a connection opened again) may read
alike while commits were made in between."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from glimpse.container import Container
from glimpse.feed import repository, service
from glimpse.feed.memo import ViewerMemo


def test_an_answer_is_not_trusted_at_another_connections_count_however_alike() -> None:
    memo = ViewerMemo(ttl_seconds=0)  # (a TTL of 0 trusts nothing by time)
    memo.put("pulled", 1, [7], (1, 7))
    assert memo.get("pulled", 1, (1, 7)) == [7]
    assert memo.get("pulled", 1, (2, 7)) is None


async def test_the_large_accounts_followed_are_read_again_under_another_connections_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[int] = []

    async def followed_pull_accounts(_: object, viewer_id: int) -> list[int]:
        reads.append(viewer_id)
        return [7] if len(reads) == 1 else [7, 8]  # (a large account followed meanwhile)

    monkeypatch.setattr(repository, "followed_pull_accounts", followed_pull_accounts)
    db = SimpleNamespace(version=lambda: (1, 3))
    container = cast(Container, SimpleNamespace(viewer_memo=ViewerMemo(ttl_seconds=0), db=db))
    assert await service.pulled_accounts(container, 1) == [7]
    db.version = lambda: (2, 3)  # another quick connection, whose own count reads alike
    assert await service.pulled_accounts(container, 1) == [7, 8]
    assert reads == [1, 1]
