"""TokenMemo (accounts/token_memo.py): a token found live is taken again only at the very
database version it was found at, and never past its own expiry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from glimpse.accounts.token_memo import TokenMemo

V1, V2 = (1, 7), (1, 8)


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_a_token_is_taken_again_only_at_the_version_it_was_found_at() -> None:
    memo = TokenMemo()
    memo.put("h", V1, 42, later(3600))
    assert memo.get("h", V1) == 42
    assert memo.get("h", V2) is None  # something was committed since: look it up again
    assert memo.get("h", (2, 7)) is None  # another connection's count, however alike
    assert memo.get("other", V1) is None


def test_a_token_is_never_taken_past_its_expiry() -> None:
    memo = TokenMemo()
    memo.put("h", V1, 42, later(-1))
    assert memo.get("h", V1) is None
    # As SQLite's quick path reads the column: UTC text, no zone.
    soon = datetime.now(UTC) + timedelta(seconds=3600)
    memo.put("t", V1, 7, soon.strftime("%Y-%m-%d %H:%M:%S.%f"))
    assert memo.get("t", V1) == 7
    past = datetime.now(UTC) - timedelta(seconds=1)
    memo.put("t", V1, 7, past.strftime("%Y-%m-%d %H:%M:%S.%f"))
    assert memo.get("t", V1) is None


def test_the_least_recently_used_go_past_the_bound() -> None:
    memo = TokenMemo(max_entries=2)
    for name in ("a", "b"):
        memo.put(name, V1, 1, later(60))
    assert memo.get("a", V1) == 1  # now the most recently used
    memo.put("c", V1, 1, later(60))
    assert memo.get("b", V1) is None
    assert memo.get("a", V1) == 1 and memo.get("c", V1) == 1
