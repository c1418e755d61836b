from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, StringConstraints

from glimpse.accounts.schemas import IdStr, Strict, UserSummary, body_examples


class CommentCreate(Strict):
    model_config = body_examples({"text": "What a light! Where was this?"})

    # The length and the characters are checked by the service (settings.max_caption_chars,
    # text.is_clean_multi_line); this only bounds what is parsed.
    text: Annotated[str, StringConstraints(max_length=100_000)]


class CommentOut(BaseModel):
    id: IdStr
    author: UserSummary
    text: str
    created_at: datetime


class CommentPage(BaseModel):
    items: list[CommentOut]
    next_cursor: str | None
