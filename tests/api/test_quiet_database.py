"""A quiet database (Database.version): while nothing is committed, the home feed serves a kept
page and takes a token it found live with no statement at all; any commit, by any process and
of any table, has the next read look again. So a token revoked, an account disabled, or a
change a kept page depends on is never served past, even from another process."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from glimpse.accounts import repository as accounts_repository
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.feed import kept_pages, service
from glimpse.feed import repository as feed_repository
from glimpse.ops import admin_users
from tests.api.social import feed, follow, user_id
from tests.api.test_kept_pages import (
    KEPT_SECONDS,
    Clock,
    _kept_page,
    kept_count,
    kept_served,
    world,
)
from tests.api.test_posts import publish
from tests.conftest import Glimpse, assert_error, running

__all__ = ["world"]  # (a fixture, shared with test_kept_pages.py)

pytestmark = [
    pytest.mark.embedded,  # (SQLite's data_version; PostgreSQL has no such thing)
    pytest.mark.parametrize("settings", [{"feed_kept_page_seconds": KEPT_SECONDS}], indirect=True),
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


def by_hand(settings: Settings, sql: str, values: dict[str, Any] | None = None) -> None:
    other = sqlite3.connect(settings.data_dir / "glimpse.db", isolation_level=None)
    try:
        other.execute(sql, values or {})
    finally:
        other.close()


# S1: the token memo must be keyed by the version read BEFORE the look-up.
async def test_a_token_revoked_right_after_its_look_up_is_refused_on_the_next_request(
    glimpse: Glimpse, settings: Settings, viewer: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    touch(settings)  # (the token's entry no longer trusted: the next request looks it up)
    look_up = accounts_repository.get_user_id_by_token_hash

    async def then_revoked(*args: Any) -> Any:
        found = await look_up(*args)
        monkeypatch.setattr(accounts_repository, "get_user_id_by_token_hash", look_up)
        by_hand(settings, "UPDATE access_tokens SET revoked_at = expires_at")  # elsewhere, now
        return found

    monkeypatch.setattr(accounts_repository, "get_user_id_by_token_hash", then_revoked)
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert response.status_code == 200  # (found live: the revocation came just after)
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert_error(response, 401, "invalid_token")


# K10: a page found to hold on the slow path is kept under the version read BEFORE its marks.
async def test_a_change_committed_while_the_marks_are_read_shows_on_the_next_read(
    glimpse: Glimpse, settings: Settings, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    container = glimpse.container
    viewer = world["people"]["viewer"]
    viewer_id = await user_id(glimpse, viewer)
    author_id = await user_id(glimpse, world["people"]["author"])
    await feed(glimpse, viewer, "latest")  # (the viewer's feed built)
    pulled = await service.pulled_accounts(container, viewer_id)

    def first_page(body: bytes) -> Any:
        async def build() -> kept_pages.Built:
            return kept_pages.Built(body, {author_id})

        return kept_pages.first_page(container, viewer_id, "latest", 7, pulled, build)

    assert await first_page(b"first") == b"first"
    assert await first_page(b"afresh") == b"first"  # (kept)
    touch(settings)  # (the page looked at again: its marks read)
    read_marks = feed_repository.feed_marks

    async def then_the_post_goes(*args: Any) -> Any:
        marks = await read_marks(*args)
        monkeypatch.setattr(feed_repository, "feed_marks", read_marks)
        by_hand(
            settings, "UPDATE posts SET status = 'failed' WHERE id = :p", {"p": int(world["post"])}
        )
        return marks

    monkeypatch.setattr(feed_repository, "feed_marks", then_the_post_goes)
    assert await first_page(b"afresh") == b"first"  # (it held when its marks were read)
    assert await first_page(b"afresh") == b"afresh"  # the change is seen


# K8: a page just built is kept under the version read before the build.
async def test_a_page_just_built_is_served_next_with_no_statement(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    container = glimpse.container
    viewer_id = await user_id(glimpse, viewer)
    pulled = await service.pulled_accounts(container, viewer_id)
    built: list[int] = []

    async def build() -> kept_pages.Built:
        built.append(1)
        return kept_pages.Built(b"built", {viewer_id})

    assert await kept_pages.first_page(container, viewer_id, "latest", 3, pulled, build) == b"built"
    with counting_statements(container.db) as ran:
        assert (
            await kept_pages.first_page(container, viewer_id, "latest", 3, pulled, build)
            == b"built"
        )
    assert (built, ran) == ([1], [])


# K7: a page renewed on the slow path remembers its counts were read at that version.
async def test_a_page_renewed_after_a_commit_is_renewed_next_with_no_statement(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    page = await feed(glimpse, viewer)
    touch(settings)
    clock.now += KEPT_SECONDS
    assert await feed(glimpse, viewer) == page  # renewed, its counts looked at
    clock.now += KEPT_SECONDS
    with counting_statements(container.db) as ran:
        assert await feed(glimpse, viewer) == page  # renewed again: nothing committed since
    assert ran == [], [str(r) for r in ran]


# K3, K4: the quick path serves a page only under the same large accounts followed and the
# same clock conditions as the slow path (Kept.holds).
@pytest.mark.parametrize("change", ["pulled", "clock went back"])
async def test_a_quiet_database_serves_a_page_only_under_what_it_was_kept_under(
    glimpse: Glimpse, world: dict[str, Any], change: str
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    viewer = world["people"]["viewer"]
    viewer_id = await user_id(glimpse, viewer)
    star_id = await user_id(glimpse, world["people"]["star"])
    await feed(glimpse, viewer, "latest")  # (the viewer's feed built)

    def first_page(body: bytes, pulled: list[int]) -> Any:
        async def build() -> kept_pages.Built:
            return kept_pages.Built(body, {viewer_id})

        return kept_pages.first_page(container, viewer_id, "latest", 7, pulled, build)

    assert await first_page(b"first", []) == b"first"
    assert await first_page(b"afresh", []) == b"first"  # (kept, nothing committed)
    if change == "pulled":  # (a large account followed, as pulled_accounts now answers)
        assert await first_page(b"afresh", [star_id]) == b"afresh"
    else:
        clock.now -= 1
        assert await first_page(b"afresh", []) == b"afresh"


# R1, K13: with the feeds in Redis (GLIMPSE_CACHE_URL) over SQLite, a change to a feed is no
# commit: the database's version must not vouch for the feed's state.
async def test_a_feed_kept_in_redis_is_looked_at_though_the_database_is_quiet(
    settings: Settings, redis_url: str
) -> None:
    async with running(settings.model_copy(update={"cache_url": redis_url})) as app:
        assert not app.container.feed_store.IN_DATABASE
        assert app.container.db.version() is not None  # (SQLite, quiet-database path live)
        viewer, author = await app.signup("viewer"), await app.signup("author")
        await follow(app, viewer, "author")
        post = await publish(app, author, caption="in redis")
        for _ in range(3):
            page = await feed(app, viewer, "latest")
        assert [p["id"] for p in page["items"]] == [post["id"]]
        viewer_id = await user_id(app, viewer)
        # The feed changed in Redis alone (as an eviction, or a flush, would change it).
        await app.container.feed_store.remove_post(int(post["id"]), [viewer_id])
        page = await feed(app, viewer, "latest")
        assert post["id"] not in [p["id"] for p in page["items"]]


# K11, K12: on SQLite the quick path hides what the window's authors are for (the next read
# is served with no look at the marks); after any unrelated commit the marks are looked at,
# and a page built for a new author must still hold (its author's mark read before the build).
@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_page_built_for_a_new_authors_post_holds_after_an_unrelated_commit(
    glimpse: Glimpse, settings: Settings, world: dict[str, Any], order: str
) -> None:
    viewer = world["people"]["viewer"]
    await _kept_page(glimpse, viewer, order)
    fresh = await publish(glimpse, world["people"]["other"], caption="new author")
    built, served = kept_count("built"), kept_served()
    page = await feed(glimpse, viewer, order)
    assert fresh["id"] in [p["id"] for p in page["items"]]
    touch(settings)  # (the marks looked at again)
    assert await feed(glimpse, viewer, order) == page
    assert (kept_count("built"), kept_served()) == (built + 1, served + 1)


# S2 (and T1 end to end): a token remembered while the database is quiet is refused once its
# own expiry passes, as stored in the database.
async def test_a_remembered_token_is_refused_once_it_expires_though_nothing_is_committed(
    glimpse: Glimpse, settings: Settings, viewer: Headers
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=2)
    by_hand(
        settings,
        "UPDATE access_tokens SET expires_at = :e",
        {"e": soon.strftime("%Y-%m-%d %H:%M:%S.%f")},
    )
    for _ in range(2):  # (looked up, then remembered)
        response = await glimpse.client.get("/api/v1/feed", headers=viewer)
        assert response.status_code == 200
    await asyncio.sleep((soon - datetime.now(UTC)).total_seconds() + 0.5)
    response = await glimpse.client.get("/api/v1/feed", headers=viewer)
    assert_error(response, 401, "invalid_token")
