"""Files built to make decoders crawl, or lying about their size, are refused at upload, before
anything is stored or queued (the worker refuses them too: tests/integration/test_decode_budget.py)."""

from __future__ import annotations

import struct

import pytest

from tests.conftest import Glimpse, assert_error
from tests.unit.media.test_structure import lying_jpeg, scan_bomb


def heic_with_an_impossible_box() -> bytes:
    """A HEIC whose `mdat` declares a 64-bit size of 2^64 - 1: seeking past it fails."""
    ftyp = struct.pack(">I", 24) + b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return ftyp + struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", 2**64 - 1)


@pytest.mark.parametrize(
    ("hostile", "status", "code"),
    [
        (scan_bomb(25_000), 422, "image_too_complex"),
        (lying_jpeg((7000, 7000)), 415, "unreadable_image"),
        (heic_with_an_impossible_box(), 415, "unreadable_image"),
    ],
    ids=["scan_bomb", "lying_header", "impossible_box"],
)
async def test_a_hostile_image_is_refused_at_upload_and_nothing_is_kept(
    glimpse: Glimpse, hostile: bytes, status: int, code: str
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.upload(headers, [("photo.jpg", hostile)])
    assert_error(response, status, code)
    assert glimpse.stored_files() == []
    assert await glimpse.run_jobs() == 0
    staging = glimpse.container.storage.staging_dir()
    assert [p for p in staging.iterdir() if p.name.startswith("upload-")] == []
