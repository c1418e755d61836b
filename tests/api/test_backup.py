"""`glimpse backup` and `glimpse restore` (ops/backup.py): a backup taken while Glimpse runs is
a whole, consistent copy that a new data folder comes back from."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from glimpse.app import create_app
from glimpse.config import Settings
from glimpse.db.migrate import head_revision, upgrade_to_head
from glimpse.ops import backup
from glimpse.ops.backup import BackupError, restore_backup, take_backup
from tests.conftest import Glimpse

# A backup is of the embedded default's data folder (SQLite and the media folder); the scale
# stack's services are backed up with their own tools, which test_other_backends_are_refused
# holds it to.
pytestmark = pytest.mark.embedded


async def test_a_backup_restores_into_a_new_folder_with_every_post_and_file(
    glimpse: Glimpse, settings: Settings, tmp_path: Path
) -> None:
    headers = await glimpse.signup()
    post_id = (await glimpse.upload(headers, caption="before")).json()["id"]
    await glimpse.run_jobs()
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
    url = post["media"][0]["variants"][0]["url"]
    served = (await glimpse.client.get(url)).content

    manifest = take_backup(settings, tmp_path / "backup")
    assert manifest.files == len(glimpse.stored_files()) and manifest.missing == 0
    # Changes after the backup are not in it.
    await glimpse.upload(headers, caption="after")

    restored = settings.model_copy(update={"data_dir": tmp_path / "restored", "secret_key": ""})
    restore_backup(restored, tmp_path / "backup")
    upgrade_to_head(restored.resolved_database_url)
    app = create_app(restored)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://glimpse.test") as c:
            again = (await c.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
            assert again["caption"] == "before"  # and the token still works (same database)
            assert (await c.get(url)).content == served
            mine = (await c.get("/api/v1/users/alice/posts", headers=headers)).json()
            assert [p["caption"] for p in mine["items"]] == ["before"]


def test_a_backup_goes_into_an_empty_folder_only(settings: Settings, tmp_path: Path) -> None:
    upgrade_to_head(settings.resolved_database_url)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("x")
    with pytest.raises(BackupError, match="not empty"):
        take_backup(settings, tmp_path / "full")


def test_a_restore_never_overwrites_a_database(settings: Settings, tmp_path: Path) -> None:
    upgrade_to_head(settings.resolved_database_url)
    take_backup(settings, tmp_path / "backup")
    with pytest.raises(BackupError, match="move it away"):
        restore_backup(settings, tmp_path / "backup")


def test_a_damaged_backup_is_refused_and_restores_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    upgrade_to_head(settings.resolved_database_url)
    take_backup(settings, tmp_path / "backup")
    database = tmp_path / "backup" / "glimpse.db"
    data = bytearray(database.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # a page of the schema's tables
    database.write_bytes(bytes(data))
    target = settings.model_copy(update={"data_dir": tmp_path / "new"})
    with pytest.raises(BackupError):
        restore_backup(target, tmp_path / "backup")
    assert not (tmp_path / "new" / "glimpse.db").exists()
    with pytest.raises(BackupError, match="not a Glimpse backup"):
        restore_backup(target, tmp_path)


def test_other_backends_are_refused(settings: Settings, tmp_path: Path) -> None:
    on_postgres = settings.model_copy(update={"database_url": "postgresql://h/db"})
    with pytest.raises(BackupError, match="own tools"):
        take_backup(on_postgres, tmp_path / "backup")


def test_the_snapshot_is_one_consistent_database(settings: Settings, tmp_path: Path) -> None:
    upgrade_to_head(settings.resolved_database_url)
    take_backup(settings, tmp_path / "backup")
    copy = sqlite3.connect(tmp_path / "backup" / "glimpse.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        revision = copy.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        assert revision == head_revision()
    finally:
        copy.close()


def test_the_secret_key_comes_back_so_signed_urls_and_sessions_stay_valid(
    settings: Settings, tmp_path: Path
) -> None:
    own_key = settings.model_copy(update={"secret_key": ""})
    upgrade_to_head(own_key.resolved_database_url)
    key = own_key.resolved_secret_key()  # made and kept in the data folder
    take_backup(own_key, tmp_path / "backup")
    restored = own_key.model_copy(update={"data_dir": tmp_path / "restored"})
    restore_backup(restored, tmp_path / "backup")
    assert restored.resolved_secret_key() == key
    assert oct((tmp_path / "restored" / "secret_key").stat().st_mode & 0o777) == "0o600"


async def test_files_deleted_before_the_backup_copied_them_are_counted_missing(
    glimpse: Glimpse, settings: Settings, tmp_path: Path
) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    await glimpse.run_jobs()
    stored = glimpse.stored_files()
    stored[0].unlink()  # (as a purge would, between the snapshot and the copy)
    manifest = take_backup(settings, tmp_path / "backup")
    assert (manifest.files, manifest.missing) == (len(stored) - 1, 1)


async def _backup_with_media(glimpse: Glimpse, settings: Settings, tmp_path: Path) -> Path:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    await glimpse.run_jobs()
    take_backup(settings, tmp_path / "backup")
    return tmp_path / "backup"


async def test_a_restore_cut_short_while_copying_media_leaves_no_database(
    glimpse: Glimpse, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database last: one restored before its media would show posts whose files are not
    # there, and refuse the restore run again to finish the job.
    source = await _backup_with_media(glimpse, settings, tmp_path)
    target = settings.model_copy(update={"data_dir": tmp_path / "new", "secret_key": ""})

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(backup.shutil, "copytree", disk_full)
        with pytest.raises(OSError):
            restore_backup(target, source)
    assert not (tmp_path / "new" / "glimpse.db").exists()
    restore_backup(target, source)  # run again, it finishes
    assert (tmp_path / "new" / "glimpse.db").is_file()


async def _restore_cut_short_while_writing_the_database(
    glimpse: Glimpse, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, Path]:
    source = await _backup_with_media(glimpse, settings, tmp_path)
    target = settings.model_copy(update={"data_dir": tmp_path / "new", "secret_key": ""})
    whole = (source / "glimpse.db").read_bytes()

    def cut_short(_: Path, written: Path) -> None:
        written.write_bytes(whole[: len(whole) // 2])  # the power went mid-copy
        raise OSError("Input/output error")

    with monkeypatch.context() as patch:
        patch.setattr(backup, "_snapshot", cut_short)
        with pytest.raises(OSError):
            restore_backup(target, source)
    return target, source


async def test_a_restore_cut_short_while_writing_the_database_leaves_none_in_its_place(
    glimpse: Glimpse, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _restore_cut_short_while_writing_the_database(glimpse, settings, tmp_path, monkeypatch)
    assert not (tmp_path / "new" / "glimpse.db").exists()  # no half a database to start on


async def test_a_restore_cut_short_while_writing_the_database_can_be_run_again(
    glimpse: Glimpse, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, source = await _restore_cut_short_while_writing_the_database(
        glimpse, settings, tmp_path, monkeypatch
    )
    restore_backup(target, source)
    copy = sqlite3.connect(tmp_path / "new" / "glimpse.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT count(*) FROM posts").fetchone()[0] == 1
    finally:
        copy.close()


async def test_a_backup_that_lost_media_files_is_refused_and_restores_nothing(
    glimpse: Glimpse, settings: Settings, tmp_path: Path
) -> None:
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    await glimpse.run_jobs()
    manifest = take_backup(settings, tmp_path / "backup")
    assert manifest.files > 1
    lost = next(p for p in (tmp_path / "backup" / "media").rglob("*") if p.is_file())
    lost.unlink()  # (a copy cut short, a file deleted from the backup since)
    target = settings.model_copy(update={"data_dir": tmp_path / "new", "secret_key": ""})
    with pytest.raises(BackupError, match=r"1 of the \d+ media files it took are not in it"):
        restore_backup(target, tmp_path / "backup")
    assert not (tmp_path / "new" / "glimpse.db").exists()


def test_a_manifest_whose_counts_are_not_counts_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    upgrade_to_head(settings.resolved_database_url)
    take_backup(settings, tmp_path / "backup")
    manifest = tmp_path / "backup" / "backup.json"
    fields = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**fields, "files": "lots"}))
    target = settings.model_copy(update={"data_dir": tmp_path / "new"})
    with pytest.raises(BackupError, match="damaged"):
        restore_backup(target, tmp_path / "backup")
    assert not (tmp_path / "new" / "glimpse.db").exists()
