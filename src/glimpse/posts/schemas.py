from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from glimpse.accounts.schemas import IdStr, UserSummary


class VariantOut(BaseModel):
    name: str
    width: int
    height: int
    content_type: str
    url: str


class MediaOut(BaseModel):
    kind: Literal["image", "video"]
    width: int | None
    height: int | None
    blurhash: str | None
    alt_text: str
    # Videos only (absent for photos): the length in seconds, and while the post is
    # processing, the percentage of its transcode done.
    duration_s: float | None = Field(default=None, exclude_if=lambda value: value is None)
    progress: int | None = Field(default=None, exclude_if=lambda value: value is None)
    variants: list[VariantOut]


class PostError(BaseModel):
    code: str
    message: str


class PostOut(BaseModel):
    id: IdStr
    author: UserSummary
    caption: str
    filter: str
    status: Literal["processing", "ready", "failed"]
    # Only failed posts carry an error (API.md: `error?`): absent, not null, otherwise.
    error: PostError | None = Field(default=None, exclude_if=lambda value: value is None)
    created_at: datetime
    like_count: int
    comment_count: int
    liked_by_me: bool
    media: list[MediaOut]


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None


class FilterPreview(BaseModel):
    """The filter as a browser can apply it to a preview (media/filters.py `preview_recipe`)."""

    tables: list[int]
    matrix: list[float] | None
    vignette: float


class FilterOut(BaseModel):
    name: str
    label: str
    preview: FilterPreview


class FilterList(BaseModel):
    items: list[FilterOut]
