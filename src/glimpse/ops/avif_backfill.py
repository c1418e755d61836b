"""`glimpse media backfill-avif`: queue the AVIF job for the photos of ready posts made before
AVIF copies were (or while they were switched off).

In batches, one short write transaction each, walking media by id: a batch holds the database's
write lock for milliseconds, and the walk never reads a whole table at once. Idempotent and
resumable: a photo that has its AVIF copies is never queued again, so running the command again
(after a crash, a Ctrl-C, or to catch up) queues only what still has none; `after` starts past
the media id a previous run printed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from glimpse.container import Container
from glimpse.ops.backup import OperatorError
from glimpse.posts import avif


@dataclass(frozen=True)
class BackfillProgress:
    queued: int  # in all, so far
    last_media_id: int  # where the next batch starts (pass it as `after` to resume there)


async def backfill_avif(
    container: Container,
    *,
    batch_size: int,
    after: int = 0,
    limit: int | None = None,
    pause_seconds: float = 0.0,
    report: Callable[[BackfillProgress], None] = lambda _: None,
) -> BackfillProgress:
    """Queue the AVIF job for every photo of a ready post without AVIF copies (up to `limit`),
    `batch_size` per transaction, `pause_seconds` between batches (to let a busy queue drain);
    `report` hears of each batch."""
    settings = container.settings
    if not settings.avif_enabled:
        raise OperatorError("AVIF copies are switched off (GLIMPSE_AVIF_ENABLED=false)")
    if not avif.avif_wanted(settings):
        raise OperatorError("this Pillow cannot write AVIF (Pillow 11.2 or later has it built in)")
    progress = BackfillProgress(0, after)
    while limit is None or progress.queued < limit:
        size = batch_size if limit is None else min(batch_size, limit - progress.queued)
        async with container.db.write() as session:
            queued = await avif.queue_backfill_batch(
                session, container.ids, settings, progress.last_media_id, size
            )
        if not queued:
            break
        progress = BackfillProgress(progress.queued + len(queued), queued[-1])
        report(progress)
        if len(queued) < size:
            break
        if pause_seconds:
            await asyncio.sleep(pause_seconds)
    return progress
