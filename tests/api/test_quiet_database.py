"""A quiet database (Database.version): while nothing is committed, the home feed serves a kept
page and takes a token it found live with no statement at all; any commit, by any process and
of any table, has the next read look again. So a token revoked, an account disabled, or a
change a kept page depends on is never served past, even from another process."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.ops import admin_users
from tests.api.social import feed, follow
from tests.api.test_posts import publish
from tests.conftest import Glimpse, assert_error, running

pytestmark = [
    pytest.mark.embedded,  # (SQLite's data_version; PostgreSQL has no such thing)
    pytest.mark.parametrize("settings", [{"feed_kept_page_seconds": 30.0}], indirect=True),
]

Headers = dict[str, str]


@contextmanager
def counting_statements(db: Database) -> Iterator[list[Any]]:
    """The statements `db.fetch` runs meanwhile (every read of the feed's hot path)."""
    ran: list[Any] = []
    fetch = db.fetch

    async def counted(statement: Any, *args: Any, **kwargs: Any) -> Any:
        ran.append(statement)
        return await fetch(statement, *args, **kwargs)

    db.fetch = counted  # type: ignore[method-assign]
    try:
        yield ran
    finally:
        del db.fetch


@pytest.fixture
async def viewer(glimpse: Glimpse) -> Headers:
    people = {name: await glimpse.signup(name) for name in ("viewer", "author")}
    await follow(glimpse, people["viewer"], "author")
    await publish(glimpse, people["author"], caption="quiet")
    for _ in range(3):  # (the feed built, then the page kept; the token found live)
        await feed(glimpse, people["viewer"])
    return people["viewer"]


def touch(settings: Settings) -> None:
    """A commit by another connection that changes nothing anyone reads."""
    other = sqlite3.connect(settings.data_dir / "glimpse.db", isolation_level=None)
    try:
        other.execute("UPDATE alembic_version SET version_num = version_num")
    finally:
        other.close()


async def test_a_kept_page_is_served_with_no_statement_while_nothing_is_committed(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    page = await feed(glimpse, viewer)
    with counting_statements(glimpse.container.db) as ran:
        assert await feed(glimpse, viewer) == page
    assert ran == [], [str(r) for r in ran]
    # Any commit, however unrelated: the token and the page are looked at again, and the page,
    # which still holds, is served as kept.
    touch(settings)
    with counting_statements(glimpse.container.db) as ran:
        assert await feed(glimpse, viewer) == page
    assert len(ran) >= 3  # (the token, the feed's state, the marks)
    with counting_statements(glimpse.container.db) as ran:
        assert await feed(glimpse, viewer) == page
    assert ran == []


async def test_a_token_signed_out_through_another_process_is_refused_at_once(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    async with running(settings) as elsewhere:
        response = await elsewhere.client.delete("/api/v1/auth/token", headers=viewer)
        assert response.status_code == 204
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert_error(response, 401, "invalid_token")


async def test_an_account_disabled_through_another_process_is_refused_at_once(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    async with running(settings) as elsewhere:
        assert await admin_users.set_disabled(elsewhere.container, "viewer", True)
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert_error(response, 401, "invalid_token")


async def test_a_token_revoked_by_hand_in_the_database_is_refused_at_once(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    other = sqlite3.connect(settings.data_dir / "glimpse.db", isolation_level=None)
    try:
        other.execute("UPDATE access_tokens SET revoked_at = expires_at")
    finally:
        other.close()
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert_error(response, 401, "invalid_token")
