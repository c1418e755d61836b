"""Queue handlers of erasures and exports. Payloads are ids; each handler reloads its rows,
treats a missing row as done, and is safe to run twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from glimpse.container import Container
from glimpse.jobs import Payload, PermanentJobError, job
from glimpse.privacy import erasure, export, repository
from glimpse.privacy.archive import ExportWriter
from glimpse.privacy.models import ExportStatus

log = logging.getLogger("glimpse.jobs")

# Exports reaped per transaction; the reaper runs hourly (an export lives a week).
REAP_BATCH = 100
REAP_EVERY_SECONDS = 3600.0


@job(erasure.ERASE_ACCOUNT_JOB)
async def erase_account(container: Container, payload: Payload) -> None:
    """Erase an account its owner asked to delete (privacy/erasure.py says how and in what
    order). A run killed anywhere is finished by the next."""
    await erasure.erase_account(container, int(payload["user_id"]))


async def _export_failed(container: Container, payload: Payload, error: PermanentJobError) -> None:
    async with container.db.write() as session:
        found = await repository.get_export(session, int(payload["export_id"]))
        if found is None or found.status != ExportStatus.PENDING:
            return
        now = container.now()
        found.status = ExportStatus.FAILED
        found.error_code, found.error_message = error.code, error.message
        found.finished_at = now
        found.expires_at = export.expiry_from(now, container.settings.export_ttl_seconds)


@job(export.BUILD_EXPORT_JOB, on_dead=_export_failed)
async def build_export(container: Container, payload: Payload) -> None:
    """Write the account's zip to a staging file, stream it into the store, then mark the
    export ready. Files first, row second: a ready export always has its file. Run twice, it
    writes the same key again."""
    export_id = int(payload["export_id"])
    async with container.db.read() as session:
        found = await repository.get_export(session, export_id)
    if found is None or found.status != ExportStatus.PENDING:
        return  # reaped, erased with its account, or finished by an earlier run
    user_id = found.user_id
    storage = container.storage
    # A name of its own for each run: a run whose lease lapsed must not write into this one's.
    path = storage.staging_dir() / f"export-{export_id}-{uuid.uuid4().hex}.zip"
    try:
        writer = ExportWriter(container.db, storage, user_id, path)
        try:
            await writer.write(container.now())
        except LookupError:
            return  # the account was erased meanwhile; its erasure deletes the export row
        size = (await asyncio.to_thread(path.stat)).st_size
        key = export.export_key(user_id, export_id)
        await storage.put_file(key, path, "application/zip")
    finally:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    async with container.db.write() as session:
        found = await repository.get_export(session, export_id)
        if found is not None and found.status == ExportStatus.PENDING:
            now = container.now()
            found.status = ExportStatus.READY
            found.key, found.size_bytes = key, size
            found.finished_at = now
            found.expires_at = export.expiry_from(now, container.settings.export_ttl_seconds)
            kept = True
        else:
            kept = found is not None and found.key == key
    if not kept:  # its row went while we worked (the account's erasure): so does the file
        await storage.delete(key)
    log.info(
        "export %d of account %d: %d bytes, %d files",
        export_id,
        user_id,
        size,
        writer.files_written,
    )


@job(export.PURGE_EXPIRED_EXPORTS_JOB, every=REAP_EVERY_SECONDS)
async def purge_expired_exports(container: Container, payload: Payload) -> None:
    """Delete exports a week old (file first, then row: a crash in between deletes the file
    again next time), and forget erased accounts whose username hold has passed."""
    reaped = 0
    while True:
        async with container.db.read() as session:
            expired = await repository.expired_exports(session, container.now(), REAP_BATCH)
        keys = [e.key for e in expired if e.key]
        if keys:
            await container.storage.delete_many(keys)
        async with container.db.write() as session:
            await repository.delete_exports(session, [e.id for e in expired])
        reaped += len(expired)
        if len(expired) < REAP_BATCH:
            break
    async with container.db.write() as session:
        released = await repository.release_held_usernames(session, container.now())
    if reaped or released:
        log.info("reaped %d expired exports; released %d held usernames", reaped, released)
