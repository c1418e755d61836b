from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from glimpse.accounts.schemas import IdStr, Strict, UserSummary, body_examples
from glimpse.posts.schemas import MediaOut, PostError


class StoryOut(BaseModel):
    id: IdStr
    author: UserSummary
    status: Literal["processing", "ready", "failed"]
    error: PostError | None = Field(default=None, exclude_if=lambda value: value is None)
    created_at: datetime
    expires_at: datetime
    # Whether the caller has viewed it (the author's own stories count as seen).
    seen: bool
    # An expired story outside every highlight has lost its media URLs: no variants.
    media: MediaOut


class StoryList(BaseModel):
    items: list[StoryOut]


class StoryPage(BaseModel):
    items: list[StoryOut]
    next_cursor: str | None


class TrayItem(BaseModel):
    user: UserSummary
    has_unseen: bool
    latest_at: datetime
    stories: list[StoryOut]


class Tray(BaseModel):
    items: list[TrayItem]


class ViewerOut(BaseModel):
    user: UserSummary
    viewed_at: datetime


class ViewerPage(BaseModel):
    items: list[ViewerOut]
    next_cursor: str | None


class HighlightCreate(Strict):
    model_config = body_examples({"title": "Lisbon", "story_ids": ["244829560084036608"]})

    # The title's length and characters are checked by the service; this bounds what is parsed.
    title: Annotated[str, StringConstraints(max_length=10_000)]
    # Ids as JSON strings (as every id is sent) or numbers; the service checks each.
    story_ids: Annotated[list[int | str], Field(max_length=1_000)]


class HighlightOut(BaseModel):
    id: IdStr
    title: str
    # The media of the first story that has URLs to give (null while none has: stories being
    # published again, or none the caller may see yet).
    cover: MediaOut | None
    stories: list[StoryOut]
    created_at: datetime


class HighlightList(BaseModel):
    items: list[HighlightOut]
