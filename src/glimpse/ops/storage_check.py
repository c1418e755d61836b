"""`glimpse storage verify`: does the media store hold every object the database records, and
what does it hold that nothing records?

Missing objects are damage (a restore from mismatched backups, a disk that lost files): the
command fails. Objects nothing records are usually litter on its way out (a deleted post's
files wait for their purge job; an upload cut off before its transaction, for the hourly
sweep), so they are reported, not removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select

from glimpse.posts.models import Media, MediaVariant

if TYPE_CHECKING:
    from glimpse.container import Container

# Every key Glimpse writes starts with one of these (posts/service.py).
STORED_FOLDERS = ("originals", "v")


@dataclass(frozen=True)
class StorageReport:
    recorded: int
    stored: int
    missing: list[str]  # recorded, not stored
    unrecorded: list[str]  # stored, not recorded

    @property
    def sound(self) -> bool:
        return not self.missing


async def verify_storage(container: Container) -> StorageReport:
    # Listed after the database is read: an upload committed in between is then listed too,
    # where the other order would report its files missing.
    async with container.db.read() as session:
        originals = (await session.execute(select(Media.original_key))).scalars().all()
        variants = (await session.execute(select(MediaVariant.key))).scalars().all()
    recorded = set(originals) | set(variants)
    stored: set[str] = set()
    for folder in STORED_FOLDERS:
        stored.update(await container.storage.list_keys(folder))
    return StorageReport(
        recorded=len(recorded),
        stored=len(stored),
        missing=sorted(recorded - stored),
        unrecorded=sorted(stored - recorded),
    )
