"""The upload use case called without HTTP, as the stories route, the web form or an import
will call it: a spooled form in, a post out; nothing left behind when it fails."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from glimpse.errors import Invalid
from glimpse.media.sniff import MediaType
from glimpse.posts import service
from glimpse.posts.upload import StagedFile, UploadForm
from glimpse.posts.uploading import create_post_from_upload
from tests.conftest import Glimpse, jpeg_bytes


async def alice_id(glimpse: Glimpse) -> int:
    headers = await glimpse.signup()
    return int((await glimpse.client.get("/api/v1/me", headers=headers)).json()["id"])


def spooled_form(glimpse: Glimpse, count: int = 1, **fields: str) -> UploadForm:
    staging = glimpse.container.storage.staging_dir()
    form = UploadForm(fields={name: [value] for name, value in fields.items()})
    for i in range(count):
        data = jpeg_bytes((320, 240))
        fd, name = tempfile.mkstemp(dir=staging, prefix="upload-")
        with open(fd, "wb") as f:
            f.write(data)
        form.files.append(StagedFile(Path(name), MediaType.JPEG, len(data), f"{i}.jpg"))
    return form


async def test_a_spooled_form_becomes_a_processing_post(glimpse: Glimpse) -> None:
    author = await alice_id(glimpse)
    form = spooled_form(glimpse, 2, caption="two", alt_text="first")
    post = await create_post_from_upload(glimpse.container, author, form)
    assert post.status == "processing" and post.caption == "two" and len(post.media) == 2
    assert [m.alt_text for m in post.media] == ["first", ""]
    assert not any(f.path.exists() for f in form.files)  # the spooled files were taken over
    assert len(glimpse.stored_files()) == 2  # the originals
    assert await glimpse.run_jobs() == 2 + 1  # the photos, then the post's fan-out


async def test_a_refused_form_leaves_nothing_behind(glimpse: Glimpse) -> None:
    author = await alice_id(glimpse)
    form = spooled_form(glimpse, filter="no such filter")
    with pytest.raises(Invalid):
        await create_post_from_upload(glimpse.container, author, form)
    assert not any(f.path.exists() for f in form.files)
    assert glimpse.stored_files() == []


async def test_a_failed_transaction_removes_the_stored_originals(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    author = await alice_id(glimpse)

    async def failing_create_post(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(service, "create_post", failing_create_post)
    form = spooled_form(glimpse, 3)
    with pytest.raises(RuntimeError):
        await create_post_from_upload(glimpse.container, author, form)
    assert glimpse.stored_files() == []
    assert not any(f.path.exists() for f in form.files)
