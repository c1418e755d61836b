"""The feed marks' triggers (migration 0013), on SQLite and PostgreSQL: each change a kept
first page depends on moves the marks of exactly the accounts it concerns, whoever makes it
(here plain SQL, as another process, a job or an admin command would), and a change that
leaves a page as it was (another's like, a count) moves none. And two transactions that take
marks in opposite orders are a 503, not a 500 (db/failures.try_again_soon)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from glimpse.accounts.models import User
from glimpse.db.database import Database
from glimpse.db.failures import try_again_soon
from glimpse.db.migrate import alembic_config
from glimpse.feed.repository import feed_marks
from glimpse.posts.models import Post, PostStatus
from tests.databases import ON_EVERY_DATABASE

pytestmark = ON_EVERY_DATABASE

ALICE, BOB, CAROL = 1, 2, 3
POST, OTHER_POST = 100, 101


async def _world(db: Database) -> None:
    async with db.write() as s:
        for uid, name in ((ALICE, "alice"), (BOB, "bob"), (CAROL, "carol")):
            s.add(User(id=uid, username=name, password_hash="x"))
        await s.flush()
        for pid, status in ((POST, PostStatus.READY), (OTHER_POST, PostStatus.PROCESSING)):
            s.add(Post(id=pid, author_id=BOB, status=status))


async def _marks(db: Database) -> dict[int, int]:
    found = await feed_marks(db, [ALICE, BOB, CAROL])
    return {uid: found.get(uid, 0) for uid in (ALICE, BOB, CAROL)}


_FOLLOW = "INSERT INTO follows (follower_id, followee_id, id, created_at) VALUES (1, 2, 7, CURRENT_TIMESTAMP)"
_BLOCK = "INSERT INTO blocks (blocker_id, blocked_id, created_at) VALUES (2, 1, CURRENT_TIMESTAMP)"
_LIKE = "INSERT INTO likes (post_id, user_id, created_at) VALUES (100, {who}, CURRENT_TIMESTAMP)"
_COMMENT = (
    "INSERT INTO comments (id, post_id, author_id, text, created_at)"
    " VALUES (9, 100, 1, 'hi', CURRENT_TIMESTAMP)"
)
_MEDIA = (
    "INSERT INTO media (id, post_id, author_id, position, kind, status, original_key,"
    " original_type, original_bytes, alt_text, created_at)"
    " VALUES ({post}, {post}, 2, 0, 'image', 'ready', 'o', 'image/jpeg', 1, '', CURRENT_TIMESTAMP)"
)
_RENDITION = (
    "INSERT INTO media_variants (media_id, name, content_type, width, height, key, size_bytes)"
    " VALUES ({post}, 'w640', 'image/avif', 640, 480, 'k', 9)"
)
_STORY = (
    "INSERT INTO posts (id, author_id, kind, caption, filter_name, status, like_count,"
    " comment_count, created_at) VALUES (103, 2, 'story', '', 'normal', 'ready', 0, 0,"
    " CURRENT_TIMESTAMP)"
)

# (what is done, after what, whose marks move)
CASES: dict[str, tuple[list[str], list[str], set[int]]] = {
    "follow made": ([], [_FOLLOW], {ALICE}),
    "follow ended": ([_FOLLOW], ["DELETE FROM follows"], {ALICE}),
    "block made": ([], [_BLOCK], {ALICE, BOB}),
    "block ended": ([_BLOCK], ["DELETE FROM blocks"], {ALICE, BOB}),
    "post made ready": ([], ["UPDATE posts SET status = 'ready' WHERE id = 101"], {BOB}),
    "post no longer ready": ([], ["UPDATE posts SET status = 'failed' WHERE id = 100"], {BOB}),
    "ready post inserted": (
        [],
        [
            "INSERT INTO posts (id, author_id, kind, caption, filter_name, status, like_count,"
            " comment_count, created_at) VALUES (102, 3, 'post', '', 'normal', 'ready', 0, 0,"
            " CURRENT_TIMESTAMP)"
        ],
        {CAROL},
    ),
    "post deleted": ([], ["DELETE FROM posts WHERE id = 100"], {BOB}),
    "own like made": ([], [_LIKE.format(who=ALICE)], {ALICE}),
    "own like ended": ([_LIKE.format(who=ALICE)], ["DELETE FROM likes"], {ALICE}),
    "own comment made": ([], [_COMMENT], {ALICE}),
    "own comment ended": ([_COMMENT], ["DELETE FROM comments"], {ALICE}),
    "renamed": ([], ["UPDATE users SET username = 'bobby' WHERE id = 2"], {BOB}),
    "display name": ([], ["UPDATE users SET display_name = 'Bob' WHERE id = 2"], {BOB}),
    "gone private": ([], ["UPDATE users SET is_private = true WHERE id = 2"], {BOB}),
    # A cascade fires them too: the account's follows and posts go with it.
    "account deleted": ([_FOLLOW], ["DELETE FROM users WHERE id = 2"], {ALICE, BOB}),
    # Migration 0014: a ready post's renditions (AVIF copies added, a processing job run again).
    "rendition added": ([_MEDIA.format(post=POST)], [_RENDITION.format(post=POST)], {BOB}),
    "rendition replaced": (
        [_MEDIA.format(post=POST), _RENDITION.format(post=POST)],
        ["UPDATE media_variants SET key = 'k2'"],
        {BOB},
    ),
    "rendition removed": (
        [_MEDIA.format(post=POST), _RENDITION.format(post=POST)],
        ["DELETE FROM media_variants"],
        {BOB},
    ),
    "rendition of a post processing": (
        [_MEDIA.format(post=OTHER_POST)],
        [_RENDITION.format(post=OTHER_POST)],
        set(),
    ),
    "rendition of a story": (
        [_STORY, _MEDIA.format(post=103)],
        [_RENDITION.format(post=103)],
        set(),
    ),
    "post deleted with its renditions": (
        [_MEDIA.format(post=POST), _RENDITION.format(post=POST)],
        ["DELETE FROM posts WHERE id = 100"],
        {BOB},
    ),
    # What a page may show a moment late: nobody's mark moves.
    "counts": ([], ["UPDATE posts SET like_count = 5, comment_count = 2 WHERE id = 100"], set()),
    "same status": ([], ["UPDATE posts SET status = 'ready' WHERE id = 100"], set()),
    "post inserted processing": (
        [],
        [
            "INSERT INTO posts (id, author_id, kind, caption, filter_name, status, like_count,"
            " comment_count, created_at) VALUES (102, 3, 'post', '', 'normal', 'processing', 0,"
            " 0, CURRENT_TIMESTAMP)"
        ],
        set(),
    ),
    "same name": ([], ["UPDATE users SET username = 'bob' WHERE id = 2"], set()),
    "counters of an account": ([], ["UPDATE users SET follower_count = 9 WHERE id = 2"], set()),
}


# (a deleted account's own mark moves once for each of its rows that go with it; a post's, once
# for the post and once for each rendition, where the cascade finds the post still there)
_MORE_THAN_ONCE = {"account deleted", "post deleted with its renditions"}


@pytest.mark.parametrize("case", list(CASES))
async def test_each_change_moves_the_marks_of_those_it_concerns(db: Database, case: str) -> None:
    before_sql, change, moved = CASES[case]
    await _world(db)
    async with db.write() as s:
        for sql in before_sql:
            await s.execute(text(sql))
    before = await _marks(db)
    async with db.write() as s:
        for sql in change:
            await s.execute(text(sql))
    after = await _marks(db)
    assert {uid for uid in after if after[uid] != before[uid]} == moved
    # Once each (but _MORE_THAN_ONCE).
    once = moved - {BOB} if case in _MORE_THAN_ONCE else moved
    assert {uid: after[uid] - before[uid] for uid in once} == dict.fromkeys(once, 1)


async def test_a_change_rolled_back_moves_no_mark(db: Database) -> None:
    await _world(db)
    before = await _marks(db)
    with pytest.raises(RuntimeError):
        async with db.write() as s:
            await s.execute(text(_FOLLOW))
            raise RuntimeError("rolled back")
    assert await _marks(db) == before


async def test_two_transactions_taking_marks_in_opposite_orders_are_told_to_try_again(
    db: Database, database: str
) -> None:
    if database != "postgresql":
        pytest.skip("SQLite runs one write transaction at a time")
    await _world(db)
    async with db.write() as s:  # both rows exist, so each upsert takes a row lock
        await s.execute(text(_LIKE.format(who=ALICE)))
        await s.execute(text(_LIKE.format(who=CAROL)))
    first_taken, second_taken = asyncio.Event(), asyncio.Event()

    async def opposite(mine: int, theirs: int, took: asyncio.Event, wait: asyncio.Event) -> Any:
        async with db.write() as s:
            await s.execute(text("DELETE FROM likes WHERE user_id = :u"), {"u": mine})
            took.set()
            await wait.wait()
            await s.execute(
                text("INSERT INTO likes (post_id, user_id, created_at) VALUES (101, :u, now())"),
                {"u": theirs},
            )

    results = await asyncio.gather(
        opposite(ALICE, CAROL, first_taken, second_taken),
        opposite(CAROL, ALICE, second_taken, first_taken),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1, results  # PostgreSQL ended one of the two
    assert isinstance(errors[0], DBAPIError) and try_again_soon(errors[0]), errors[0]


async def test_every_trigger_of_the_migration_is_there_at_head(db: Database, database: str) -> None:
    """A later migration that makes SQLite copy one of these tables drops its triggers."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    names = []
    for migration in ("0013", "0014"):
        revision = script.get_revision(migration)
        assert revision is not None
        names += revision.module.TRIGGER_NAMES
    sql = (
        "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        if database == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'trigger'"
    )
    async with db.read() as s:
        present = {row[0] for row in await s.execute(text(sql))}
    assert set(names) <= present, set(names) - present
