"""A PostgreSQL server that ends the app's connection in the middle of a request (a restart, a
failover, `pg_terminate_backend`): the request is answered 503 with Retry-After, as for a busy
SQLite file, never 500 (db/failures.py); nothing it did is half-kept, and the next request,
on a fresh connection, succeeds. tests/faults/test_postgres_terminations.py does the same to
real servers under load."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from glimpse.posts import repository as posts_repository
from tests.conftest import Glimpse, assert_error
from tests.databases import ADMIN_URL

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


async def _terminate(pid: int) -> None:
    """End backend `pid` from another connection, as an operator or a failover does."""
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()


def cut_before(monkeypatch: pytest.MonkeyPatch, times: int = 1) -> list[int]:
    """The next `times` visibility checks of a like or a comment end their own connection, from
    another one, first: the statement after it is the first to find the connection gone,
    mid-transaction."""
    real = posts_repository.visible_post_status
    ended: list[int] = []

    async def visible_post_status(
        session: AsyncSession, post_id: int, viewer_id: int, **kwargs: Any
    ) -> Any:
        if len(ended) < times:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            await _terminate(pid)
            ended.append(pid)
        return await real(session, post_id, viewer_id, **kwargs)

    monkeypatch.setattr(posts_repository, "visible_post_status", visible_post_status)
    return ended


async def test_a_like_whose_connection_is_ended_is_a_503_and_the_next_one_counts(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = (await glimpse.upload(bob)).json()["id"]
    await glimpse.run_jobs()
    ended = cut_before(monkeypatch)

    response = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=alice)

    assert ended, "the connection was not ended"
    assert_error(response, 503, "unavailable")
    assert response.headers["Retry-After"] == "1"
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)).json()
    assert post["like_count"] == 0 and not post["liked_by_me"]  # nothing half-kept
    response = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=alice)
    assert response.status_code == 204, response.text
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)).json()
    assert post["like_count"] == 1 and post["liked_by_me"]


async def test_a_comment_whose_connection_is_ended_is_a_503_and_leaves_no_comment(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = (await glimpse.upload(bob)).json()["id"]
    await glimpse.run_jobs()
    cut_before(monkeypatch)

    response = await glimpse.client.post(
        f"/api/v1/posts/{post_id}/comments", headers=alice, json={"text": "hello"}
    )

    assert_error(response, 503, "unavailable")
    assert "Retry-After" in response.headers
    comments = await glimpse.client.get(f"/api/v1/posts/{post_id}/comments", headers=alice)
    assert comments.status_code == 200 and comments.json()["items"] == []
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)).json()
    assert post["comment_count"] == 0


async def test_connections_ended_between_requests_are_replaced_before_the_next_one(
    glimpse: Glimpse,
) -> None:
    """A restart or failover while the pool is idle: the pre-ping on checkout (db/database.py)
    finds each dead connection and opens a fresh one, so no request, read or write, sees it."""
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    post_id = (await glimpse.upload(bob)).json()["id"]
    await glimpse.run_jobs()
    database = make_url(glimpse.container.settings.resolved_database_url).database
    admin = await asyncpg.connect(ADMIN_URL)
    try:
        pids = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
        ended = [p for (p,) in pids if await admin.fetchval("SELECT pg_terminate_backend($1)", p)]
    finally:
        await admin.close()
    assert ended, "the app held no connection to end"

    response = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=alice)
    assert response.status_code == 204, response.text
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=alice)
    assert response.status_code == 200, response.text
    assert response.json()["like_count"] == 1 and response.json()["liked_by_me"]


async def test_a_lone_read_whose_connection_is_ended_is_read_again(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path's single-statement reads (Database.fetch: the token check of every request,
    the feed, the story tray) changed nothing, so one cut under them is read again on a fresh
    connection (db/failures.read_once_more_if_lost): the client sees no error at all."""
    alice = await glimpse.signup("alice")
    db = glimpse.container.db
    real = db._single_statements
    ended: list[int] = []

    @asynccontextmanager
    async def connect() -> AsyncIterator[AsyncConnection]:
        async with real.connect() as connection:
            if not ended:
                pid = (await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one()
                await _terminate(pid)
                ended.append(pid)
            yield connection

    monkeypatch.setattr(db, "_single_statements", SimpleNamespace(connect=connect))

    response = await glimpse.client.get("/api/v1/stories/tray", headers=alice)

    assert ended, "the connection was not ended"
    assert response.status_code == 200, response.text
