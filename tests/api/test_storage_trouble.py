"""A full, read-only or failing disk under the uploads or the database (issue 12, row 8): the
API answers 503 with Retry-After, never 500, leaves nothing behind, and /readyz names the
reason."""

from __future__ import annotations

import errno
import os
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from glimpse.config import Settings
from glimpse.errors import StorageUnavailable
from glimpse.ops import routes as ops_routes
from glimpse.posts import upload
from tests.api.test_upload_validation import BOUNDARY, multipart, refused
from tests.conftest import Glimpse, assert_error, jpeg_bytes


def _unavailable(response: Any, code: str) -> None:
    assert_error(response, 503, code)
    assert int(response.headers["retry-after"]) >= 1


# --- spooling an upload -----------------------------------------------------------------------


async def test_a_full_staging_disk_is_503_storage_unavailable_and_leaves_nothing(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload.tempfile, "mkstemp", full)
    response = await glimpse.upload(headers)
    await refused(glimpse, response, 503, "storage_unavailable")
    _unavailable(response, "storage_unavailable")
    assert response.headers["connection"] == "close"
    monkeypatch.undo()
    assert (await glimpse.upload(headers)).status_code == 202  # and later it works


async def test_a_write_failing_half_way_through_a_spooled_file_removes_it(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    real_fdopen = os.fdopen

    class FailingFile:
        def __init__(self, f: Any) -> None:
            self.f = f
            self.written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 1000:
                raise OSError(errno.EIO, "Input/output error")
            return int(self.f.write(data))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    monkeypatch.setattr(
        upload.os, "fdopen", lambda fd, mode: FailingFile(real_fdopen(fd, mode)), raising=True
    )
    response = await glimpse.upload(headers, [("a.jpg", jpeg_bytes((640, 480)))])
    monkeypatch.undo()
    await refused(glimpse, response, 503, "storage_unavailable")


async def test_read_upload_itself_turns_a_failing_staging_disk_into_storage_unavailable(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without relying on the app's handler of stray OSErrors.
    def read_only(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(upload.tempfile, "mkstemp", read_only)
    body = multipart([("file", "a.jpg", jpeg_bytes())])

    async def chunks() -> AsyncIterator[bytes]:
        yield body

    with pytest.raises(StorageUnavailable) as caught:
        await upload.read_upload(
            f"multipart/form-data; boundary={BOUNDARY}", chunks(), Settings(), tmp_path
        )
    assert caught.value.code == "storage_unavailable"
    assert caught.value.headers is not None
    assert int(caught.value.headers["Retry-After"]) >= 1
    assert caught.value.headers["Connection"] == "close"
    assert list(tmp_path.iterdir()) == []


# --- storing the originals (a backend that lets an OSError through) ---------------------------


async def test_a_full_store_is_503_storage_unavailable_not_500(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()

    async def full(*args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(glimpse.container.storage, "put_file", full)
    response = await glimpse.upload(headers)
    _unavailable(response, "storage_unavailable")
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []


async def test_a_store_that_says_it_is_unavailable_is_503_with_retry_after(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the storage backends raise for a full, read-only or failing disk.
    headers = await glimpse.signup()

    async def unavailable(*args: Any) -> None:
        raise StorageUnavailable("The store is full.", retry_after=60)

    monkeypatch.setattr(glimpse.container.storage, "put_file", unavailable)
    response = await glimpse.upload(headers)
    _unavailable(response, "storage_unavailable")
    assert response.headers["retry-after"] == "60"
    assert list(glimpse.container.storage.staging_dir().iterdir()) == []
    assert glimpse.stored_files() == []


# --- the database's disk ----------------------------------------------------------------------


@contextmanager
def failing_writes(
    glimpse: Glimpse,
    code: int,
    message: str,
    kind: type[sqlite3.DatabaseError] = sqlite3.OperationalError,
) -> Iterator[None]:
    """Every statement on the write engine fails as SQLite fails with `code`."""
    engine = glimpse.container.db.write_engine.sync_engine

    def fail(*args: Any) -> None:
        error = kind(message)
        error.sqlite_errorcode = code  # type: ignore[attr-defined]
        raise error

    event.listen(engine, "before_cursor_execute", fail)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", fail)


@pytest.mark.embedded  # (SQLite's own errors, raised on its write engine)
@pytest.mark.parametrize(
    ("code", "message"),
    [
        (13, "database or disk is full"),
        (8, "attempt to write a readonly database"),
        (10, "disk I/O error"),
        (266, "disk I/O error"),  # SQLITE_IOERR_READ, an extended code
        (1032, "attempt to write a readonly database"),  # SQLITE_READONLY_DBMOVED
        (14, "unable to open database file"),
        # A disk failing reads: SQLite gets short pages and calls the file malformed, a plain
        # DatabaseError (an attack through a failing disk got 500s here).
        (11, "database disk image is malformed"),
        (26, "file is not a database"),
    ],
)
async def test_a_database_on_a_full_or_read_only_disk_is_503_then_recovers(
    glimpse: Glimpse, code: int, message: str
) -> None:
    body = {"username": "late", "password": "long enough"}
    kind = sqlite3.DatabaseError if code in (11, 26) else sqlite3.OperationalError
    with failing_writes(glimpse, code, message, kind):
        response = await glimpse.client.post("/api/v1/accounts", json=body)
    _unavailable(response, "storage_unavailable")
    assert (await glimpse.client.post("/api/v1/accounts", json=body)).status_code == 201


class _FailingReads:
    """A quick connection (Database.fetch) on a disk that fails reads."""

    def __init__(self, code: int, message: str) -> None:
        self.code, self.message = code, message

    def execute(self, *args: Any) -> Any:
        # (As sqlite3 raises them: an I/O error is an OperationalError, a malformed file not.)
        kind = sqlite3.OperationalError if self.code & 0xFF == 10 else sqlite3.DatabaseError
        error = kind(self.message)
        error.sqlite_errorcode = self.code  # type: ignore[attr-defined]
        raise error


@pytest.mark.embedded  # (SQLite's quick read path)
@pytest.mark.parametrize(
    ("code", "message"),
    [(11, "database disk image is malformed"), (266, "disk I/O error")],
)
async def test_a_disk_failing_reads_is_503_on_the_quick_path_then_recovers(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch, code: int, message: str
) -> None:
    headers = await glimpse.signup()
    db = glimpse.container.db
    db.version()  # (this thread's quick connection opened, then its reads fail)
    monkeypatch.setattr(db, "_quick_connection", lambda: _FailingReads(code, message))
    for path in ("/api/v1/feed", "/api/v1/users/alice/posts"):
        _unavailable(await glimpse.client.get(path, headers=headers), "storage_unavailable")
    monkeypatch.undo()
    assert (await glimpse.client.get("/api/v1/feed", headers=headers)).status_code == 200


@pytest.mark.embedded  # (SQLite's own errors, raised on its write engine)
async def test_the_error_line_names_the_route_not_the_path(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    # The request's own line logs its route's template (ops/request_log.py); so does the
    # error line, which its request id ties to it: a path holds people's names and ids.
    ada = await glimpse.signup("ada")
    await glimpse.signup("bob")
    with caplog.at_level("WARNING"), failing_writes(glimpse, 13, "database or disk is full"):
        response = await glimpse.client.post("/api/v1/users/bob/follow", headers=ada)
    _unavailable(response, "storage_unavailable")
    lines = [r.getMessage() for r in caplog.records if r.name == "glimpse.api"]
    assert "the database cannot be written (POST /api/v1/users/{username}/follow): " in lines[0]
    assert not [line for line in lines if "bob" in line]


@pytest.mark.embedded  # (SQLite's query_only pragma)
async def test_a_really_read_only_database_is_503(glimpse: Glimpse) -> None:
    db = glimpse.container.db
    await db.write_engine.dispose()

    def read_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only=ON")

    event.listen(db.write_engine.sync_engine, "connect", read_only)
    try:
        response = await glimpse.client.post(
            "/api/v1/accounts", json={"username": "late", "password": "long enough"}
        )
        _unavailable(response, "storage_unavailable")
    finally:
        event.remove(db.write_engine.sync_engine, "connect", read_only)
        await db.write_engine.dispose()


# --- /readyz ----------------------------------------------------------------------------------


async def test_readyz_names_why_the_database_cannot_be_opened(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def out_of_files() -> None:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(glimpse.container.db, "schema_revision", out_of_files)
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == (
        "failed: cannot open the database: [Errno 24] Too many open files"
    )


async def test_readyz_never_blames_the_migrations_when_it_cannot_read_their_scripts(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ops_routes, "head_revision", lambda: None)
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    reason = response.json()["checks"]["database"]
    assert reason == "failed: cannot read the migration scripts"
    assert "not at head" not in reason


async def test_a_refused_upload_on_a_read_only_staging_disk_keeps_its_answer(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup()
    real_unlink = pathlib.Path.unlink

    def read_only(self: pathlib.Path, *args: Any, **kwargs: Any) -> None:
        if self.name.startswith("upload-"):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "unlink", read_only)
    response = await glimpse.upload(headers, caption="x" * 2201)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "caption_too_long"
