"""Uploads that keep a connection without finishing (issue 12, row 7): an overall deadline, a
minimum rate, and a cap on uploads received at once. The pace rules themselves are unit-tested
in tests/unit/test_upload_pace.py."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from glimpse.posts.upload import UPLOAD_SLOTS
from tests.api.test_upload_validation import BOUNDARY, multipart, refused
from tests.conftest import Glimpse, assert_error, jpeg_bytes

MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def _endless(pause: float, size: int) -> AsyncIterator[bytes]:
    body = multipart([("file", "a.jpg", jpeg_bytes((64, 64)))])
    head = body[: body.index(b"\xff\xd8") + 200]

    async def chunks() -> AsyncIterator[bytes]:
        yield head
        for _ in range(200):  # ends (unfinished) after ~10 s, should the server not cut it
            await asyncio.sleep(pause)
            yield b"\x00" * size

    return chunks()


@pytest.mark.parametrize(
    "settings",
    [{"upload_deadline_seconds": 1.0, "upload_min_rate_bytes_per_second": 0}],
    indirect=True,
)
async def test_an_upload_still_arriving_at_its_deadline_is_cut_and_leaves_nothing(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    # Never idle for long, so only the deadline can end it.
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": MULTIPART},
        content=_endless(0.05, 100),
        timeout=10,
    )
    error = await refused(glimpse, response, 400, "upload_too_slow")
    assert "did not finish within 1 seconds" in error["message"]
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    "settings",
    [
        {
            "upload_min_rate_bytes_per_second": 50_000,
            "upload_min_rate_window_seconds": 1.0,
            "upload_min_rate_grace_seconds": 0.3,
        }
    ],
    indirect=True,
)
async def test_an_upload_slower_than_the_minimum_rate_is_cut_and_leaves_nothing(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": MULTIPART},
        content=_endless(0.05, 10),
        timeout=10,
    )
    error = await refused(glimpse, response, 400, "upload_too_slow")
    assert "too slowly" in error["message"]
    assert response.headers["connection"] == "close"


@contextlib.asynccontextmanager
async def _an_upload_held_open(glimpse: Glimpse, headers: dict[str, str]) -> AsyncIterator[None]:
    """An upload whose body stops half-way (holding its slot) until the block ends; it then
    finishes and must be accepted."""
    body = multipart([("file", "a.jpg", jpeg_bytes())])
    go_on = asyncio.Event()

    async def held() -> AsyncIterator[bytes]:
        yield body[:300]
        await go_on.wait()
        yield body[300:]

    first = asyncio.create_task(
        glimpse.client.post(
            "/api/v1/posts", headers={**headers, "Content-Type": MULTIPART}, content=held()
        )
    )
    while UPLOAD_SLOTS.taken == 0:
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        go_on.set()
        assert (await first).status_code == 202
    assert UPLOAD_SLOTS.taken == 0


@pytest.mark.parametrize("settings", [{"max_concurrent_uploads": 1}], indirect=True)
async def test_an_upload_past_the_concurrent_cap_is_503_before_its_body_is_read(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    body = multipart([("file", "a.jpg", jpeg_bytes())])
    pulled = 0

    async def counted() -> AsyncIterator[bytes]:
        nonlocal pulled
        pulled += 1
        yield body

    async with _an_upload_held_open(glimpse, headers):
        second = await glimpse.client.post(
            "/api/v1/posts", headers={**headers, "Content-Type": MULTIPART}, content=counted()
        )
        assert_error(second, 503, "busy")
        assert int(second.headers["retry-after"]) >= 1
        assert second.headers["connection"] == "close"
        assert pulled == 0
    # The slot is free again.
    assert (await glimpse.upload(headers)).status_code == 202


@pytest.mark.parametrize(
    "settings",
    [{"max_concurrent_uploads": 10, "max_concurrent_uploads_per_account": 1}],
    indirect=True,
)
async def test_one_account_holds_only_its_share_of_the_upload_slots(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    async with _an_upload_held_open(glimpse, alice):
        second = await glimpse.upload(alice)
        assert_error(second, 429, "throttled")
        assert int(second.headers["retry-after"]) >= 1
        # Another account is not held up by Alice's share.
        assert (await glimpse.upload(bob)).status_code == 202
    assert (await glimpse.upload(alice)).status_code == 202
