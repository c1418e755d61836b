"""Likes and comments: the rules. Nobody likes, comments on, or lists the comments of a post
they may not see (404, as for the post itself). Services never commit."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.accounts.models import User
from glimpse.accounts.schemas import UserSummary
from glimpse.config import Settings
from glimpse.db.base import utcnow
from glimpse.engagement import repository
from glimpse.engagement.models import Comment
from glimpse.engagement.schemas import CommentOut
from glimpse.errors import Conflict, Forbidden, Invalid, NotFound
from glimpse.graph import repository as graph_repository
from glimpse.ids import IdGenerator
from glimpse.posts import service as posts
from glimpse.posts.models import PostStatus
from glimpse.text import is_clean_multi_line


async def _ready_visible_post(session: AsyncSession, post_id: int, viewer_id: int) -> None:
    status = await posts.visible_post_status(session, post_id, viewer_id, keep=True)
    if status != PostStatus.READY:  # only its author gets this far
        raise Conflict("The post is still processing (or failed).", code="post_not_ready")


async def like(session: AsyncSession, post_id: int, viewer_id: int) -> None:
    """Idempotent: a second like changes nothing, and the count moves once."""
    await _ready_visible_post(session, post_id, viewer_id)
    await repository.add_like(session, post_id, viewer_id, utcnow())


async def unlike(session: AsyncSession, post_id: int, viewer_id: int) -> None:
    await posts.visible_post_status(session, post_id, viewer_id)
    await repository.remove_like(session, post_id, viewer_id)


def check_comment_text(text: str, settings: Settings) -> str:
    if not text.strip():
        raise Invalid("A comment needs some text.", code="empty_comment")
    if len(text) > settings.max_caption_chars:
        raise Invalid(
            f"A comment may be at most {settings.max_caption_chars} characters.",
            code="comment_too_long",
        )
    if not is_clean_multi_line(text):
        raise Invalid(
            "Comments may not contain control characters or invisible ones"
            " (bidi overrides, zero-width and tag characters).",
            code="invalid_text",
        )
    return text


async def add_comment(
    session: AsyncSession,
    ids: IdGenerator,
    settings: Settings,
    post_id: int,
    viewer: User,
    text: str,
) -> CommentOut:
    text = check_comment_text(text, settings)
    await _ready_visible_post(session, post_id, viewer.id)
    comment = Comment(
        id=ids.next_id(), post_id=post_id, author_id=viewer.id, text=text, created_at=utcnow()
    )
    await repository.add_comment(session, comment)
    return comment_view(comment, viewer)


async def list_comments(
    session: AsyncSession, post_id: int, viewer_id: int, after: int | None, limit: int
) -> tuple[list[CommentOut], int | None]:
    """A page of the post's comments, oldest first, and the key to continue after."""
    await posts.visible_post_status(session, post_id, viewer_id)
    rows = await repository.comments_page(session, post_id, viewer_id, after, limit + 1)
    items = [comment_view(c, u) for c, u in rows[:limit]]
    return items, rows[limit - 1][0].id if len(rows) > limit else None


def comment_view(comment: Comment, author: User) -> CommentOut:
    return CommentOut(
        id=comment.id,
        author=UserSummary(
            id=author.id, username=author.username, display_name=author.display_name
        ),
        text=comment.text,
        created_at=comment.created_at,
    )


async def delete_comment(
    session: AsyncSession, post_id: int, comment_id: int, viewer_id: int
) -> None:
    """The comment's author, or the post's, deletes a comment. 404 for a post the viewer may
    not see and for a comment they are not shown (another post's, or one of an account
    blocked either way); 403 `not_author` to anyone else."""
    post = await posts.get_visible_post(session, post_id, viewer_id)
    comment = await repository.get_comment(session, comment_id)
    if comment is None or comment.post_id != post_id:
        raise NotFound("No such comment.", code="comment_not_found")
    if viewer_id not in (comment.author_id, post.author_id):
        relation = await graph_repository.relation(session, viewer_id, comment.author_id)
        if relation.blocks or relation.blocked_by:
            raise NotFound("No such comment.", code="comment_not_found")
        raise Forbidden("Only the comment's author or the post's may delete it.", code="not_author")
    await repository.delete_comment(session, comment_id)
