"""Data exports (Instagram's "download your information"): starting one, showing its state with
a signed download URL, and the rules the download and the reaper apply.

The download URL names the export and the account and expires (`export_url_ttl_seconds`, a day
by default, and never past the export's own expiry); its signature is HMAC with the server's
secret over "export:<id>:<account>:<expiry>" (glimpse/signing.py, as the media origin signs
"media:..."), so no other signed URL can pass for it. The download also wants the owner's own
token or session: a URL that leaked (a shared screen, a proxy's log) is no use to anybody else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from glimpse.backends.queue.outbox import enqueue
from glimpse.errors import NotFound, Unauthenticated
from glimpse.privacy import repository
from glimpse.privacy.models import AccountExport, ExportStatus
from glimpse.signing import signature, signature_matches

if TYPE_CHECKING:
    from glimpse.container import Container

BUILD_EXPORT_JOB = "build_export"
PURGE_EXPIRED_EXPORTS_JOB = "purge_expired_exports"
_SIG_BYTES = 16


def export_key(user_id: int, export_id: int) -> str:
    return f"exports/{user_id}/{export_id}.zip"


def _message(export_id: int, user_id: int, expires: int) -> bytes:
    return f"export:{export_id}:{user_id}:{expires}".encode()


def sign_download(secret: bytes, export_id: int, user_id: int, expires: int) -> str:
    return signature(secret, _message(export_id, user_id, expires), _SIG_BYTES)


def download_signature_valid(
    secret: bytes, export_id: int, user_id: int, exp: str, sig: str, now: float
) -> bool:
    """Whether `exp`/`sig` were made by sign_download for this export and account and have
    not expired. Anything malformed is simply not valid."""
    if not (exp.isascii() and exp.isdigit() and 0 < len(exp) <= 12) or str(int(exp)) != exp:
        return False
    expires = int(exp)
    if expires <= now:
        return False
    return signature_matches(secret, _message(export_id, user_id, expires), sig, _SIG_BYTES)


@dataclass(frozen=True)
class ExportView:
    export: AccountExport
    url: str | None
    url_expires_at: datetime | None


def _not_found() -> NotFound:
    return NotFound("No such export.", code="export_not_found")


async def start_export(container: Container, user_id: int) -> AccountExport:
    """Queue an export of the account, or return the one already running (one at a time per
    account: each reads every file the account has)."""
    async with container.db.write() as session:
        user = await repository.lock_user(session, user_id)
        if user is None or user.disabled_at is not None:
            # Authenticated just before its erasure was asked for: an export made now would
            # outlive the erasure's own clean-up of the account's exports.
            raise Unauthenticated("The token is missing, expired or revoked.", code="invalid_token")
        running = await repository.pending_export_of(session, user_id)
        if running is not None:
            return running
        export = AccountExport(
            id=container.ids.next_id(),
            user_id=user_id,
            status=ExportStatus.PENDING,
            created_at=container.now(),
        )
        session.add(export)
        await session.flush()
        enqueue(
            session,
            container.ids,
            BUILD_EXPORT_JOB,
            {"export_id": export.id},
            max_attempts=container.settings.job_max_attempts,
            owner=user_id,
        )
        return export


async def show_export(container: Container, user_id: int, export_id: int) -> ExportView:
    """The export's state, and when it is ready a signed download URL. 404 for an export
    of another account (never confirming that it exists) and for one reaped."""
    async with container.db.read() as session:
        export = await repository.get_export(session, export_id)
    now = container.now()
    if export is None or export.user_id != user_id or _expired(export, now):
        raise _not_found()
    if export.status != ExportStatus.READY or export.expires_at is None:
        return ExportView(export, None, None)
    expires = min(
        int(now.timestamp()) + container.settings.export_url_ttl_seconds,
        math.floor(export.expires_at.timestamp()),
    )
    sig = sign_download(container.secret_key, export.id, user_id, expires)
    url = f"/api/v1/me/exports/{export.id}/download?exp={expires}&sig={sig}"
    return ExportView(export, url, datetime.fromtimestamp(expires, now.tzinfo))


async def show_latest_export(container: Container, user_id: int) -> ExportView:
    """The caller's most recent export (for a client that lost its id); 404 when none is kept."""
    async with container.db.read() as session:
        latest = await repository.latest_export_of(session, user_id)
    if latest is None:
        raise _not_found()
    return await show_export(container, user_id, latest.id)


async def downloadable(
    container: Container, user_id: int, export_id: int, exp: str, sig: str
) -> AccountExport:
    """The ready export a download URL names, if the URL is good and the caller owns it; else
    404, alike for every reason (a forged or expired signature, another account's export)."""
    if not download_signature_valid(
        container.secret_key, export_id, user_id, exp, sig, container.clock()
    ):
        raise _not_found()
    async with container.db.read() as session:
        export = await repository.get_export(session, export_id)
    if (
        export is None
        or export.user_id != user_id
        or export.status != ExportStatus.READY
        or export.key is None
        or _expired(export, container.now())
    ):
        raise _not_found()
    return export


def _expired(export: AccountExport, now: datetime) -> bool:
    return export.expires_at is not None and export.expires_at <= now


def expiry_from(now: datetime, ttl_seconds: float) -> datetime:
    return now + timedelta(seconds=ttl_seconds)
