"""Queue handlers of stories: the reaper."""

from __future__ import annotations

import logging

from glimpse.container import Container
from glimpse.jobs import Payload, job
from glimpse.ops.metrics import STORIES_ARCHIVED, STORY_FILES_RELEASED, never_failing
from glimpse.posts import service as posts
from glimpse.posts.models import PostStatus
from glimpse.stories import repository

log = logging.getLogger("glimpse.jobs")

PURGE_EXPIRED_STORIES_JOB = "purge_expired_stories"
# Often enough that an expired story's files are gone within a minute (its URLs stopped
# working at the second it expired: they were signed up to then).
REAP_EVERY_SECONDS = 20.0
# Stories handled per transaction: each is a few row deletions, so a batch holds the write
# lock for milliseconds, and a backlog (workers down for a day) drains batch after batch.
REAP_BATCH = 500


@job(PURGE_EXPIRED_STORIES_JOB, every=REAP_EVERY_SECONDS)
async def purge_expired_stories(container: Container, payload: Payload) -> None:
    """Archive every expired story: the ones no highlight holds lose their variants (rows now,
    files by a purge job queued in the same transaction, which keeps any file another post
    still uses); their originals stay, for the archive and for a highlight to publish them
    again. Safe to run twice, and in several workers at once (each batch decides under the
    write lock)."""
    reaped = 0
    while True:
        async with container.db.write() as session:
            now = container.now()
            expired = await repository.expired_unarchived(session, now, REAP_BATCH)
            # A story still processing is left for a later run: its variants are not all
            # recorded yet, and would be left behind.
            done = [story_id for story_id, status in expired if status != PostStatus.PROCESSING]
            held = await repository.held(session, done)
            released = [story_id for story_id in done if story_id not in held]
            keys = await repository.take_down_variants(session, released)
            posts.schedule_purge(session, container.ids, container.settings, keys, delay_seconds=0)
            await repository.set_archived(session, done, archived=True)
        with never_failing():
            STORIES_ARCHIVED.inc(len(done))
            STORY_FILES_RELEASED.inc(len(keys))
        reaped += len(done)
        if len(expired) < REAP_BATCH or not done:
            break
    if reaped:
        log.info("archived %d expired stories", reaped)
