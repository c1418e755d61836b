"""The upload use case for a story: the posts' one (posts/uploading.py), with a story row in
the same transaction. It owns its transactions, as a route would."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from glimpse.container import Container
from glimpse.posts.models import Post, PostKind
from glimpse.posts.upload import UploadForm
from glimpse.posts.uploading import store_upload
from glimpse.stories import repository
from glimpse.stories.lifetime import expiry_of
from glimpse.stories.models import Story
from glimpse.stories.repository import StoryRow
from glimpse.stories.schemas import StoryOut
from glimpse.stories.views import story_view_data


async def create_story_from_upload(
    container: Container, author_id: int, form: UploadForm
) -> StoryOut:
    """Store the photo and insert the story (status `processing`, expiring
    GLIMPSE_STORY_TTL_SECONDS after now) with its processing job. Raises what
    create_post_from_upload raises."""

    async def add_story(session: AsyncSession, post: Post) -> StoryOut:
        story = Story(
            id=post.id,
            author_id=author_id,
            created_at=post.created_at,
            expires_at=expiry_of(post.created_at, container.settings.story_ttl_seconds),
        )
        await repository.add_story(session, story)
        row = StoryRow(
            post.id, author_id, post.status, None, None, story.created_at, story.expires_at
        )
        [view] = await story_view_data(
            session, [row], author_id, container.now(), container.media_urls
        )
        return StoryOut.model_validate(view)

    return await store_upload(container, author_id, form, PostKind.STORY, add_story)
