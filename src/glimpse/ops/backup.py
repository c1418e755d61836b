"""`glimpse backup DEST` and `glimpse restore SRC`: the embedded default's whole state, taken
while it runs, and put back.

A backup is a folder: `glimpse.db` (SQLite's online backup: one consistent snapshot, however
busy the database), `media/` (the originals and variants, copied after the snapshot, so every
file the snapshot records was there to copy unless it was deleted meanwhile; such files are
counted in the manifest), `secret_key` (signed media URLs and sessions stay valid) and
`backup.json`. PostgreSQL and S3 have their own tools for this (pg_dump or base backups, bucket
versioning or replication); the commands refuse those backends rather than copy half a system.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy.engine import make_url

from glimpse import __version__
from glimpse.config import Settings
from glimpse.ops.storage_check import STORED_FOLDERS

DATABASE_FILE = "glimpse.db"
MEDIA_FOLDER = "media"
SECRET_FILE = "secret_key"
MANIFEST = "backup.json"


class OperatorError(Exception):
    """What an operator's command is told, and exits 1 with."""


class BackupError(OperatorError):
    pass


@dataclass(frozen=True)
class BackupManifest:
    glimpse_version: str
    taken_at: float
    files: int
    bytes: int
    # Files the snapshot records that were deleted before they could be copied (their posts
    # were deleted meanwhile): a restore shows those posts without those files.
    missing: int


def embedded_paths(settings: Settings) -> tuple[Path, Path]:
    """The SQLite file and the media folder, or BackupError for other backends."""
    database = make_url(settings.resolved_database_url)
    storage = urlparse(settings.resolved_storage_url)
    if database.get_backend_name() != "sqlite" or not database.database or storage.scheme != "file":
        raise BackupError(
            "glimpse backup copies the embedded default (SQLite and a media folder); back up"
            " PostgreSQL and S3 storage with their own tools"
        )
    return Path(database.database), Path(storage.path)


def take_backup(settings: Settings, destination: Path) -> BackupManifest:
    database, media = embedded_paths(settings)
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    if destination.exists() and any(destination.iterdir()):
        raise BackupError(f"{destination} is not empty")
    destination.mkdir(parents=True, exist_ok=True)
    _snapshot(database, destination / DATABASE_FILE)
    recorded = _recorded_keys(destination / DATABASE_FILE)
    files = size = 0
    for key in sorted(recorded):
        source, target = media / key, destination / MEDIA_FOLDER / key
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(source, target)
        except FileNotFoundError:
            continue
        files += 1
        size += target.stat().st_size
    os.sync()  # the copies on disk before the manifest says the backup is whole
    secret = settings.data_dir / SECRET_FILE
    if not settings.secret_key and secret.is_file():
        shutil.copyfile(secret, destination / SECRET_FILE)
        os.chmod(destination / SECRET_FILE, 0o600)
    manifest = BackupManifest(__version__, time.time(), files, size, len(recorded) - files)
    _write_durably(destination / MANIFEST, json.dumps(asdict(manifest), indent=2) + "\n")
    return manifest


def restore_backup(settings: Settings, source: Path) -> BackupManifest:
    """Put a backup in place of an empty data folder (never over a database: move it away
    first). The caller migrates the database afterwards, should the backup be older."""
    database, media = embedded_paths(settings)
    manifest = _read_manifest(source)
    if database.exists():
        raise BackupError(f"{database} exists; move it away before restoring over it")
    _check_integrity(source / DATABASE_FILE)
    _check_media_complete(source, manifest)
    database.parent.mkdir(parents=True, exist_ok=True)
    for folder in STORED_FOLDERS:
        if (source / MEDIA_FOLDER / folder).is_dir():
            shutil.copytree(source / MEDIA_FOLDER / folder, media / folder, dirs_exist_ok=True)
    if (source / SECRET_FILE).is_file() and not (settings.data_dir / SECRET_FILE).exists():
        shutil.copyfile(source / SECRET_FILE, settings.data_dir / SECRET_FILE)
        os.chmod(settings.data_dir / SECRET_FILE, 0o600)
    # The database last, under a temporary name first: a restore cut short leaves no database
    # that points at media not yet copied, and can simply be run again.
    partial = database.with_name(database.name + ".restoring")
    # A run cut short leaves its half-written copy: it is started afresh, never written into.
    partial.unlink(missing_ok=True)
    _snapshot(source / DATABASE_FILE, partial)
    os.replace(partial, database)
    _sync_folder(database.parent)
    return manifest


def keeps_another_secret(settings: Settings, source: Path) -> bool:
    """Whether a restore of `source` would keep a secret_key the data folder already holds in
    place of the backup's other one (restore_backup never replaces it): sessions and signed
    links made before the backup would then no longer be valid."""
    ours, theirs = settings.data_dir / SECRET_FILE, source / SECRET_FILE
    try:
        return ours.is_file() and theirs.is_file() and ours.read_bytes() != theirs.read_bytes()
    except OSError:
        return False  # (the restore itself reports a backup it cannot read)


def _read_manifest(source: Path) -> BackupManifest:
    try:
        fields = json.loads((source / MANIFEST).read_text())
        manifest = BackupManifest(**fields)
    except (OSError, ValueError, TypeError):
        raise BackupError(f"{source} holds no readable {MANIFEST}: not a Glimpse backup") from None
    counts = (manifest.files, manifest.bytes, manifest.missing)
    # (Its counts are what the media check below holds the backup to: a hand-edited manifest
    # must not make that check vacuous.)
    if not all(type(n) is int and n >= 0 for n in counts):
        raise BackupError(f"{source}'s {MANIFEST} is damaged: its counts are not counts")
    return manifest


def _check_media_complete(source: Path, manifest: BackupManifest) -> None:
    # A backup whose media were partly lost (a copy cut short, a file deleted from it since)
    # would otherwise restore "successfully" into posts whose photos are gone, with nothing
    # said: every file the backup took must still be in it before anything is restored.
    try:
        recorded = _recorded_keys(source / DATABASE_FILE)
    except sqlite3.Error as exc:
        raise BackupError(f"the backup's database is not Glimpse's: {exc}") from None
    present = sum(1 for key in recorded if (source / MEDIA_FOLDER / key).is_file())
    if present < manifest.files:
        raise BackupError(
            f"{source} is incomplete: {manifest.files - present} of the {manifest.files} media"
            " files it took are not in it; nothing was restored"
        )


def _snapshot(source: Path, target: Path) -> None:
    reader = sqlite3.connect(_read_only(source), uri=True)
    writer = sqlite3.connect(target)
    try:
        reader.backup(writer)
        writer.commit()
    except sqlite3.Error as exc:
        raise BackupError(f"could not copy the database: {exc}") from None
    finally:
        writer.close()
        reader.close()
    with open(target, "rb+") as copied:
        os.fsync(copied.fileno())


def _read_only(database: Path) -> str:
    return database.resolve().as_uri() + "?mode=ro"


def _recorded_keys(database: Path) -> set[str]:
    connection = sqlite3.connect(_read_only(database), uri=True)
    try:
        originals = connection.execute("SELECT original_key FROM media").fetchall()
        variants = connection.execute("SELECT key FROM media_variants").fetchall()
    finally:
        connection.close()
    return {row[0] for row in (*originals, *variants)}


def _check_integrity(database: Path) -> None:
    try:
        connection = sqlite3.connect(_read_only(database), uri=True)
        try:
            verdict = connection.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise BackupError(f"the backup's database cannot be read: {exc}") from None
    if verdict != "ok":
        raise BackupError(f"the backup's database is damaged: {verdict}")


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
