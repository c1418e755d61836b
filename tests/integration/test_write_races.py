"""Writes that check, then insert, racing a write that undoes what they checked, on PostgreSQL.

SQLite runs write transactions one at a time, so what a check saw is still so at the insert.
PostgreSQL does not: under READ COMMITTED another API process's write may commit in between.
Each test lets the check pass, then starts the racing write (over HTTP, as another API process
would) and waits until it has either finished or lined up behind a lock (seen in
pg_stat_activity) before the insert goes on; the outcome must be one that the two writes in
some order would give.

- A like or a comment racing the deletion of its post: the insert faced a foreign key to a post
  that is gone (a 500). It must be answered as usual and go with the post.
- A follow racing a block between the two accounts: the follow outlived the block (and came back
  with the unblock, where "follows it ended stay ended"). The block must end it.
- A highlight racing the deletion of its one story: the highlight was left empty (a highlight is
  1 to 100 stories; a deleted story's empty highlights go with it). A view racing it: a foreign
  key to a story that is gone. Either must be answered and leave nothing of the story."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from glimpse.config import Settings
from glimpse.db.urls import async_database_url
from glimpse.engagement import repository
from glimpse.graph import repository as graph_repository
from glimpse.stories import repository as stories_repository
from tests.conftest import Glimpse, jpeg_bytes

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


async def test_a_follow_racing_a_block_between_the_two_does_not_outlive_it(
    glimpse: Glimpse, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await glimpse.signup("owner")
    fan = await glimpse.signup("fan")
    blocks: list[asyncio.Task[Any]] = []
    gate = await asyncpg.connect(_plain_url(settings))
    add_follow = graph_repository.add_follow

    async def add_follow_after_the_block(*args: Any, **kwargs: Any) -> Any:
        block = asyncio.ensure_future(glimpse.client.post("/api/v1/users/fan/block", headers=owner))
        blocks.append(block)
        await _until_waiting_or_done(gate, block)
        return await add_follow(*args, **kwargs)

    monkeypatch.setattr(graph_repository, "add_follow", add_follow_after_the_block)
    try:
        followed = await glimpse.client.post("/api/v1/users/owner/follow", headers=fan)
        assert followed.status_code == 200, followed.text
        assert (await blocks[0]).status_code == 204
    finally:
        await gate.close()
    monkeypatch.undo()
    assert (
        await glimpse.client.delete("/api/v1/users/fan/block", headers=owner)
    ).status_code == 204
    profile = (await glimpse.client.get("/api/v1/users/owner", headers=fan)).json()
    assert profile["follow_status"] == "none"
    assert profile["follower_count"] == 0


@pytest.mark.parametrize("action", ["highlight", "view"])
async def test_a_highlight_or_view_racing_the_storys_deletion_leaves_nothing_behind(
    glimpse: Glimpse, settings: Settings, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    author = await glimpse.signup("author")
    fan = await glimpse.signup("fan")
    story = await glimpse.client.post(
        "/api/v1/stories", headers=author, files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
    )
    story_id = story.json()["id"]
    await glimpse.run_jobs()
    deletions: list[asyncio.Task[Any]] = []
    gate = await asyncpg.connect(_plain_url(settings))
    name = "add_highlight" if action == "highlight" else "add_view"
    insert = getattr(stories_repository, name)

    async def insert_after_the_deletion(*args: Any, **kwargs: Any) -> Any:
        deletion = asyncio.ensure_future(
            glimpse.client.delete(f"/api/v1/stories/{story_id}", headers=author)
        )
        deletions.append(deletion)
        await _until_waiting_or_done(gate, deletion)
        return await insert(*args, **kwargs)

    monkeypatch.setattr(stories_repository, name, insert_after_the_deletion)
    try:
        if action == "highlight":
            answer = await glimpse.client.post(
                "/api/v1/me/highlights",
                headers=author,
                json={"title": "t", "story_ids": [story_id]},
            )
            assert answer.status_code == 201, answer.text
        else:
            answer = await glimpse.client.post(f"/api/v1/stories/{story_id}/view", headers=fan)
            assert answer.status_code == 204, answer.text
        assert (await deletions[0]).status_code == 204
    finally:
        await gate.close()
    # A highlight is 1 to 100 stories: the one its only story left went with it.
    highlights = await glimpse.client.get("/api/v1/users/author/highlights", headers=author)
    assert highlights.json()["items"] == []
