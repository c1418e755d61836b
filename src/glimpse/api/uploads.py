"""The HTTP side of every upload route (a post, a story): the account's upload budget, then the
multipart body spooled as it streams in. The use case itself lives in the slice's service."""

from __future__ import annotations

from fastapi import Request

from glimpse.api.throttling import count_against
from glimpse.container import Container
from glimpse.posts.upload import UploadForm, read_upload
from glimpse.throttling import UPLOAD


async def receive_upload(
    request: Request, container: Container, uploader_id: int, max_files: int | None = None
) -> UploadForm:
    # Until the body is fully read, an error response closes the connection (api/errors.py).
    request.state.body_unread = True
    await count_against(
        request,
        container.throttle,
        UPLOAD,
        "account",
        str(uploader_id),
        message="Too many uploads; please try again later.",
    )
    form = await read_upload(
        request.headers.get("content-type", ""),
        request.stream(),
        container.settings,
        container.storage.staging_dir(),
        uploader=str(uploader_id),
        max_files=max_files,
    )
    request.state.body_unread = False
    return form
