"""Who may see an account's content: the one rule every read path applies, as a pure function
(for rows already loaded) and as SQL (for queries that must not return what the viewer may not
see, so that a page, a feed or a cursor never carries it).

A viewer sees a post when it is `ready` and its author is public, or is the viewer, or is
followed by the viewer (an approved follow); and neither of the two blocks the other. The
author alone also sees their own posts while they are processing or after they failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import BindParameter, ColumnElement, and_, exists, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from glimpse.accounts.models import User
from glimpse.graph.models import Block, Follow
from glimpse.posts.models import Post, PostKind, PostStatus
from glimpse.stories.models import HighlightStory, Story


@dataclass(frozen=True)
class Relation:
    """How a viewer stands to another account."""

    follows: bool = False  # the viewer follows it (approved)
    requested: bool = False  # the viewer asked to follow it and waits
    blocks: bool = False  # the viewer blocks it
    blocked_by: bool = False  # it blocks the viewer

    @property
    def blocked(self) -> bool:
        return self.blocks or self.blocked_by


def can_see_content(viewer_id: int, owner_id: int, owner_private: bool, relation: Relation) -> bool:
    """Whether the viewer may see what this account shares (its grid, followers, stories)."""
    if viewer_id == owner_id:
        return True
    if relation.blocked:
        return False
    return not owner_private or relation.follows


def can_see_post(
    viewer_id: int, post_status: str, author_id: int, author_private: bool, relation: Relation
) -> bool:
    if viewer_id == author_id:
        return True  # processing and failed posts too: the author watches them finish
    if post_status != PostStatus.READY:
        return False
    return can_see_content(viewer_id, author_id, author_private, relation)


def follows(
    viewer_id: int | BindParameter[int], owner_id: ColumnElement[int] | InstrumentedAttribute[int]
) -> ColumnElement[bool]:
    return exists().where(Follow.follower_id == viewer_id, Follow.followee_id == owner_id)


def blocked_between(
    viewer_id: int | BindParameter[int], owner_id: ColumnElement[int] | InstrumentedAttribute[int]
) -> ColumnElement[bool]:
    return or_(
        exists().where(Block.blocker_id == viewer_id, Block.blocked_id == owner_id),
        exists().where(Block.blocker_id == owner_id, Block.blocked_id == viewer_id),
    )


def content_visible_to(
    viewer_id: int,
    owner_id: ColumnElement[int] | InstrumentedAttribute[int],
    owner_private: ColumnElement[bool] | InstrumentedAttribute[bool] | None = None,
) -> ColumnElement[bool]:
    """The SQL form of can_see_content for the account in column `owner_id`. Pass its
    `is_private` column when the query already joins users; else it is looked up."""
    public = (
        owner_private == false()
        if owner_private is not None
        else exists(select(User.id).where(User.id == owner_id, User.is_private == false()))
    )
    return or_(
        owner_id == viewer_id,
        and_(~blocked_between(viewer_id, owner_id), or_(public, follows(viewer_id, owner_id))),
    )


def post_visible_to(
    viewer_id: int, author_private: ColumnElement[bool] | InstrumentedAttribute[bool] | None = None
) -> ColumnElement[bool]:
    """The SQL form of can_see_post, over the posts table."""
    return or_(
        Post.author_id == viewer_id,
        and_(
            Post.status == PostStatus.READY,
            content_visible_to(viewer_id, Post.author_id, author_private),
        ),
    )


def in_feed_of(viewer_id: int | BindParameter[int]) -> ColumnElement[bool]:
    """The SQL form of "this post belongs in the viewer's home feed": a ready post of the
    viewer's own or of an account the viewer follows, neither blocking the other. (A subset of
    post_visible_to: a followed account's posts are visible to its followers.)"""
    return and_(
        Post.kind == PostKind.POST,
        Post.status == PostStatus.READY,
        or_(
            Post.author_id == viewer_id,
            and_(follows(viewer_id, Post.author_id), ~blocked_between(viewer_id, Post.author_id)),
        ),
    )


def still_shown(now: datetime) -> ColumnElement[bool]:
    """Over the posts table: a post, or a story that is live at `now` or that a highlight
    holds. (Expiry is exact: a story is shown until the second it expires, whatever the reaper
    has done yet.)"""
    return or_(
        Post.kind == PostKind.POST,
        exists().where(Story.id == Post.id, Story.expires_at > now),
        exists().where(HighlightStory.story_id == Post.id),
    )
