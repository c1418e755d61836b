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


async def test_no_decoder_library_reads_a_hostile_image_in_the_api_s_own_process(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The API judges an upload from its header and structure alone (media/headers.py, sniff.py,
    # in Python): Pillow, pillow-heif and FFmpeg read uploads only in decoding children, where a
    # crash or a blow-up costs a child. (A CI run once lost a test process on the impossible box.)
    import av
    import pillow_heif
    from PIL import Image

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a decoder library read an upload in the API's process")

    for module, name in (
        (Image, "open"),
        (pillow_heif, "open_heif"),
        (pillow_heif, "read_heif"),
        (av, "open"),
    ):
        monkeypatch.setattr(module, name, refuse)
    headers = await glimpse.signup()
    for hostile, status, code in (
        (scan_bomb(25_000), 422, "image_too_complex"),
        (lying_jpeg((7000, 7000)), 415, "unreadable_image"),
        (heic_with_an_impossible_box(), 415, "unreadable_image"),
    ):
        assert_error(await glimpse.upload(headers, [("photo.jpg", hostile)]), status, code)
    assert glimpse.stored_files() == []
