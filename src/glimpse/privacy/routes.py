"""HTTP routes of erasure (`DELETE /api/v1/me`) and data exports."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse

from glimpse.api.deps import Caller, ContainerDep, EntityId
from glimpse.api.errors import error_responses
from glimpse.api.throttling import ClientAddress, count_against
from glimpse.backends.storage import ObjectMissing
from glimpse.errors import NotFound
from glimpse.privacy import erasure, export
from glimpse.privacy.schemas import ErasureOut, ErasureRequest, ExportOut
from glimpse.throttling import EXPORTS

# 429: every /api/ request counts against a budget (api/throttling.py).
router = APIRouter(
    prefix="/api/v1", tags=["accounts"], responses=error_responses(401, 422, 429, 503)
)


@router.delete(
    "/me",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ErasureOut,
    responses=error_responses(400, 413),
)
async def erase_me(
    body: ErasureRequest, caller: Caller, address: ClientAddress, container: ContainerDep
) -> JSONResponse:
    """Erase the caller's account, confirmed with its password: every post, story, highlight,
    comment, like, follow, token and stored file. Its tokens stop working and its profile is
    gone at once; a job does the rest. The username stays taken for a while. A wrong password
    is answered as a wrong sign-in is, and counts against the same budget."""
    await erasure.erase_with_password(container, caller.user, body.password, address)
    return JSONResponse(ErasureOut().model_dump(), status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "/me/export",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExportOut,
)
async def start_export(request: Request, caller: Caller, container: ContainerDep) -> ExportOut:
    """Start building a zip of the caller's posts and stories (originals and JSON with
    captions, alt text and dates), comments, likes, followers and following. One runs at a
    time: while one is pending, this answers with it."""
    await count_against(
        request,
        container.throttle,
        EXPORTS,
        "account",
        str(caller.user.id),
        message="Too many exports; please try again later.",
    )
    started = await export.start_export(container, caller.user.id)
    return ExportOut.of(export.ExportView(started, None, None))


@router.get("/me/export", response_model=ExportOut, responses=error_responses(404))
async def get_latest_export(caller: Caller, container: ContainerDep) -> ExportOut:
    """The caller's most recent export, as `GET /me/exports/{id}` shows it; 404 when there is
    none (never made, or deleted a week after it was made)."""
    return ExportOut.of(await export.show_latest_export(container, caller.user.id))


@router.get("/me/exports/{export_id}", response_model=ExportOut, responses=error_responses(404))
async def get_export(export_id: EntityId, caller: Caller, container: ContainerDep) -> ExportOut:
    """The export's state; once ready, a signed `url` to download it, valid for a day
    (`expires_at`). Exports are deleted a week after they are made (`available_until`)."""
    view = await export.show_export(container, caller.user.id, export_id)
    return ExportOut.of(view)


_SIGNED = Annotated[str, Query(max_length=64)]


@router.get(
    "/me/exports/{export_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/zip": {}}, "description": "The zip"},
        **error_responses(404),
    },
)
async def download_export(
    export_id: EntityId, exp: _SIGNED, sig: _SIGNED, caller: Caller, container: ContainerDep
) -> StreamingResponse:
    """The export's zip, for its owner, from the signed URL `GET /me/exports/{id}` gave. 404
    alike for a forged or expired signature, another account's export and one deleted."""
    found = await export.downloadable(container, caller.user.id, export_id, exp, sig)
    assert found.key is not None
    storage = container.storage
    size = await storage.size(found.key)
    if size is None:
        raise NotFound("No such export.", code="export_not_found")
    try:
        chunks = await storage.open_range(found.key, 0, size)
    except ObjectMissing:
        raise NotFound("No such export.", code="export_not_found") from None
    return StreamingResponse(
        chunks,
        media_type="application/zip",
        headers={
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="glimpse-export-{export_id}.zip"',
            "Cache-Control": "private, no-store",
        },
    )
