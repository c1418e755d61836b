"""A like or a comment racing the deletion of its post, on PostgreSQL.

SQLite runs write transactions one at a time, so a post seen by the like's visibility check is
still there at its insert. PostgreSQL does not: a deletion committed between the two left the
insert facing a foreign key to a post that is gone (a 500). The test lets the check pass, then
starts the deletion (over HTTP, as another API process would) and waits until it has either
finished or lined up behind a lock (seen in pg_stat_activity) before the insert goes on: the
like or comment must then be answered as usual and go with the post."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from glimpse.config import Settings
from glimpse.db.urls import async_database_url
from glimpse.engagement import repository
from tests.conftest import Glimpse

pytestmark = pytest.mark.parametrize("database", ["postgresql"], indirect=True)


def _plain_url(settings: Settings) -> str:
    return async_database_url(settings.database_url).replace("postgresql+asyncpg", "postgresql")


async def _until_waiting_or_done(connection: asyncpg.Connection, task: asyncio.Task[Any]) -> None:
    deadline = time.monotonic() + 60
    while not task.done():
        waiting = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting:
            return
        assert time.monotonic() < deadline, "the deletion neither ended nor waited"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("action", ["like", "comment"])
async def test_a_like_or_comment_racing_the_posts_deletion_is_no_server_error(
    glimpse: Glimpse, settings: Settings, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    author = await glimpse.signup("author")
    fan = await glimpse.signup("fan")
    post_id = (await glimpse.upload(author)).json()["id"]
    await glimpse.run_jobs()
    deletions: list[asyncio.Task[Any]] = []
    gate = await asyncpg.connect(_plain_url(settings))

    def deleting_first(insert: Any) -> Any:
        async def insert_after_the_deletion(*args: Any, **kwargs: Any) -> Any:
            deletion = asyncio.ensure_future(
                glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=author)
            )
            deletions.append(deletion)
            await _until_waiting_or_done(gate, deletion)
            return await insert(*args, **kwargs)

        return insert_after_the_deletion

    name = "add_like" if action == "like" else "add_comment"
    monkeypatch.setattr(repository, name, deleting_first(getattr(repository, name)))
    try:
        if action == "like":
            answer = await glimpse.client.post(f"/api/v1/posts/{post_id}/like", headers=fan)
            assert answer.status_code == 204, answer.text
        else:
            answer = await glimpse.client.post(
                f"/api/v1/posts/{post_id}/comments", headers=fan, json={"text": "first!"}
            )
            assert answer.status_code == 201, answer.text
        assert (await deletions[0]).status_code == 204
    finally:
        await gate.close()
    gone = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=author)
    assert gone.status_code == 404
