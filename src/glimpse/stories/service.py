"""Stories: who sees which, the tray, views, the archive and highlights.

Services never commit: the route or the job owns the transaction. `now` is always passed in
(Container.now), so that expiry is exact and testable without sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.db.database import Database
from glimpse.errors import Conflict, Forbidden, Invalid, NotFound
from glimpse.graph import repository as graph_repository
from glimpse.graph import service as graph
from glimpse.graph.visibility import can_see_content, can_see_post
from glimpse.ids import IdGenerator
from glimpse.posts import repository as posts_repository
from glimpse.posts import service as posts
from glimpse.posts.service import NO_SUCH_USER, processing_job
from glimpse.privacy import repository as privacy_repository
from glimpse.stories import repository
from glimpse.stories.lifetime import is_live
from glimpse.stories.models import Highlight
from glimpse.stories.repository import StoryRow
from glimpse.text import is_clean_single_line

MAX_TITLE_CHARS = 64
MAX_HIGHLIGHT_STORIES = 100
# Every highlight is listed on its owner's profile in one answer (API.md: no pages), each with
# its stories' signed URLs: this bounds that answer (about 30,000 URLs at most).
MAX_HIGHLIGHTS = 30


def _no_such_story() -> NotFound:
    return NotFound("No such story.", code="story_not_found")


def _no_such_highlight() -> NotFound:
    return NotFound("No such highlight.", code="highlight_not_found")


async def _author_and_relation_allow(
    session: AsyncSession, story: StoryRow | None, viewer_id: int
) -> bool:
    """graph.visibility's rule for one story. The same statements run for a story that does
    not exist, so that how long a 404 takes does not tell a hidden story from a missing one."""
    author_id = story.author_id if story is not None else NO_SUCH_USER
    authors = await posts_repository.load_authors(session, {author_id})
    relation = await graph_repository.relation(session, viewer_id, author_id)
    if story is None or author_id not in authors:
        return False
    return can_see_post(viewer_id, story.status, author_id, authors[author_id].is_private, relation)


async def get_story(
    session: AsyncSession,
    story_id: int,
    viewer_id: int,
    now: datetime,
    lock: repository.RowLock | None = None,
) -> StoryRow:
    """A live story the viewer may see (its author also sees it while it is processing, or
    after it failed); NotFound otherwise, and from the second it expires."""
    story = await repository.get_story(session, story_id, lock=lock)
    allowed = await _author_and_relation_allow(session, story, viewer_id)
    if story is None or not allowed or not is_live(story.expires_at, now):
        raise _no_such_story()
    return story


async def user_stories(
    session: AsyncSession, username: str, viewer_id: int, now: datetime
) -> list[StoryRow]:
    """An account's live stories, oldest first: 404 for an account that blocks the viewer,
    403 for a private one the viewer does not follow (as its posts)."""
    owner = await graph.visible_content_owner(session, username, viewer_id)
    return await repository.live_stories_of(
        session, owner.id, now, ready_only=owner.id != viewer_id
    )


@dataclass(frozen=True)
class TrayEntry:
    author_id: int
    has_unseen: bool
    latest_at: datetime
    stories: list[StoryRow]


def arrange_tray(rows: Sequence[tuple[StoryRow, bool]]) -> list[TrayEntry]:
    """Group live stories (with whether the viewer saw each) by account: accounts with a story
    the viewer has not seen first, then the account with the latest story first; each
    account's stories oldest first, the order they play in."""
    by_author: dict[int, list[tuple[StoryRow, bool]]] = {}
    for story, seen in sorted(rows, key=lambda r: r[0].id):
        by_author.setdefault(story.author_id, []).append((story, seen))
    entries = [
        TrayEntry(
            author_id=author_id,
            has_unseen=not all(seen for _, seen in stories),
            latest_at=stories[-1][0].created_at,
            stories=[story for story, _ in stories],
        )
        for author_id, stories in by_author.items()
    ]
    # Ids break ties: two accounts' latest stories made in the same microsecond.
    entries.sort(key=lambda e: (not e.has_unseen, -e.latest_at.timestamp(), -e.stories[-1].id))
    return entries


async def tray(db: Database, viewer_id: int, now: datetime) -> tuple[list[TrayEntry], set[int]]:
    """The tray and the ids of the stories in it that the viewer has seen."""
    rows = await repository.tray(db, viewer_id, now)
    return arrange_tray(rows), {story.id for story, seen in rows if seen}


async def view_story(
    session: AsyncSession, ids: IdGenerator, story_id: int, viewer_id: int, now: datetime
) -> None:
    """Record that the viewer saw a live story they may see. Idempotent; the author's own
    views are not recorded (they are no audience)."""
    story = await get_story(session, story_id, viewer_id, now, lock="keep")
    if story.author_id != viewer_id:
        await repository.add_view(session, story.id, viewer_id, ids.next_id(), now)


async def list_viewers(
    session: AsyncSession,
    story_id: int,
    viewer_id: int,
    before: int | None,
    limit: int,
    now: datetime,
) -> tuple[list[tuple[int, User, datetime]], bool]:
    """Who viewed one of the caller's stories (expired ones too), the latest first; and
    whether more follow. 403 for someone else's live story the caller may see, else 404 (run
    through the same statements, so that its time does not tell a hidden story exists)."""
    story = await repository.get_story(session, story_id)
    allowed = await _author_and_relation_allow(session, story, viewer_id)
    if story is None or story.author_id != viewer_id:
        if story is not None and allowed and is_live(story.expires_at, now):
            raise Forbidden("Only the author sees who viewed a story.", code="not_author")
        raise _no_such_story()
    rows = await repository.viewers_page(session, story_id, before, limit + 1)
    return rows[:limit], len(rows) > limit


async def archive(
    session: AsyncSession, author_id: int, before: int | None, limit: int
) -> tuple[list[StoryRow], bool]:
    rows = await repository.archive_page(session, author_id, before, limit + 1)
    return rows[:limit], len(rows) > limit


def parse_story_ids(raw: Sequence[int | str]) -> list[int]:
    """1..100 story ids, as numbers or digit strings; repeats dropped, order kept."""
    ids: list[int] = []
    for value in raw:
        if isinstance(value, str):
            if not (value.isascii() and value.isdigit() and len(value) <= 19):
                raise Invalid("story_ids must be story ids.", code="invalid_story_ids")
            value = int(value)
        if not 0 <= value < 2**63:
            raise Invalid("story_ids must be story ids.", code="invalid_story_ids")
        if value not in ids:
            ids.append(value)
    if not 1 <= len(ids) <= MAX_HIGHLIGHT_STORIES:
        raise Invalid(
            f"A highlight holds 1 to {MAX_HIGHLIGHT_STORIES} stories.", code="invalid_story_ids"
        )
    return ids


def check_title(title: str) -> str:
    title = title.strip()
    if not 1 <= len(title) <= MAX_TITLE_CHARS or not is_clean_single_line(title):
        raise Invalid(
            f"A highlight's title is 1 to {MAX_TITLE_CHARS} characters on one line, with no"
            " control or invisible characters.",
            code="invalid_title",
        )
    return title


async def create_highlight(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    owner_id: int,
    title: str,
    story_ids: Sequence[int],
    now: datetime,
) -> Highlight:
    """A highlight of the caller's own stories, live or archived. Stories whose media the
    reaper took down are processed again from their kept originals (same bytes, same keys),
    with jobs enqueued in this transaction."""
    title = check_title(title)
    if await repository.count_highlights(session, owner_id) >= MAX_HIGHLIGHTS:
        raise Conflict(
            f"An account keeps at most {MAX_HIGHLIGHTS} highlights; delete one first.",
            code="too_many_highlights",
        )
    stories = await repository.stories_by_id(session, story_ids, lock="keep")
    if len(stories) != len(story_ids) or any(s.author_id != owner_id for s in stories.values()):
        # (Someone else's story is as unknown as one that does not exist.)
        raise _no_such_story()
    highlight = Highlight(id=ids.next_id(), owner_id=owner_id, title=title, created_at=now)
    await repository.add_highlight(session, highlight, story_ids)
    for media_id, kind in await repository.media_without_variants(session, story_ids):
        enqueue(
            session,
            ids,
            processing_job(kind),
            {"media_id": media_id},
            max_attempts=settings.job_max_attempts,
            owner=owner_id,
        )
    return highlight


async def visible_highlight(session: AsyncSession, highlight_id: int, viewer_id: int) -> Highlight:
    """A highlight whose owner's content the viewer may see (as their posts); else 404."""
    highlight = await repository.get_highlight(session, highlight_id)
    owner_id = highlight.owner_id if highlight is not None else NO_SUCH_USER
    owners = await posts_repository.load_authors(session, {owner_id})
    relation = await graph_repository.relation(session, viewer_id, owner_id)
    if highlight is None or owner_id not in owners:
        raise _no_such_highlight()
    if not can_see_content(viewer_id, owner_id, owners[owner_id].is_private, relation):
        raise _no_such_highlight()
    return highlight


async def user_highlights(session: AsyncSession, username: str, viewer_id: int) -> list[Highlight]:
    owner = await graph.visible_content_owner(session, username, viewer_id)
    return await repository.highlights_of(session, owner.id)


async def delete_highlight(
    session: AsyncSession, highlight_id: int, viewer_id: int, now: datetime
) -> None:
    """The owner deletes a highlight. Its expired stories that no other highlight holds go
    back to the reaper, which takes their media down again."""
    highlight = await visible_highlight(session, highlight_id, viewer_id)
    if highlight.owner_id != viewer_id:
        raise Forbidden("Only its owner may delete a highlight.", code="not_owner")
    story_ids = await repository.delete_highlight(session, highlight_id)
    still_held = await repository.held(session, story_ids)
    stories = await repository.stories_by_id(session, story_ids)
    released = [
        story_id
        for story_id, story in stories.items()
        if story_id not in still_held and not is_live(story.expires_at, now)
    ]
    await repository.set_archived(session, released, archived=False)


async def delete_story(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    story_id: int,
    viewer_id: int,
    now: datetime,
) -> None:
    """The author deletes a story, live or archived: its views and its places in highlights go
    with it (a highlight left empty goes too), and its files (original and variants) after the
    grace period deleted posts' files get, unless another post uses them. 403 to whoever else
    may see it, 404 to the rest."""
    story = await repository.get_story(session, story_id, lock="delete")
    if story is None or story.author_id != viewer_id:
        allowed = await _author_and_relation_allow(session, story, viewer_id)
        if story is not None and allowed and is_live(story.expires_at, now):
            raise Forbidden("Only its author may delete a story.", code="not_author")
        raise _no_such_story()
    highlights = await repository.highlights_holding(session, story_id)
    keys = await privacy_repository.delete_posts(session, [story_id])
    await repository.delete_empty_highlights(session, highlights)
    posts.schedule_purge(session, ids, settings, keys)
