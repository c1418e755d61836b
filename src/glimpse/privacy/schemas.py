"""Request and response models of erasure and export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, StringConstraints

from glimpse.accounts.schemas import IdStr, Strict, body_examples
from glimpse.posts.views import rfc3339
from glimpse.privacy.export import ExportView


class ErasureRequest(Strict):
    model_config = body_examples({"password": "correct horse battery"})

    # As a sign-in's: any length up to the cap, so that a wrong one is told what a wrong
    # sign-in is told, not why it cannot be a password.
    password: Annotated[str, StringConstraints(max_length=256)]


class ErasureOut(BaseModel):
    status: Literal["erasing"] = "erasing"


class ExportError(BaseModel):
    code: str
    message: str


class ExportOut(BaseModel):
    id: IdStr
    status: Literal["pending", "ready", "failed"]
    created_at: str
    # When ready: where to download it, and until when that URL works (a day at most).
    url: str | None = None
    expires_at: str | None = None
    # When the export itself is deleted (a week after it was made).
    available_until: str | None = None
    size_bytes: int | None = None
    error: ExportError | None = None

    @classmethod
    def of(cls, view: ExportView) -> ExportOut:
        export = view.export
        return cls(
            id=export.id,
            status=export.status,
            created_at=rfc3339(export.created_at),
            url=view.url,
            expires_at=_time(view.url_expires_at),
            available_until=_time(export.expires_at),
            size_bytes=export.size_bytes,
            error=ExportError(code=export.error_code, message=export.error_message or "")
            if export.error_code
            else None,
        )


def _time(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None
