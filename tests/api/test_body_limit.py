"""The cap on request bodies (API.md: a JSON body over its cap is a 413 answered before the rest
is read). The raw-socket test against a real server is in tests/e2e/test_hostile_clients.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import Glimpse, assert_error, jpeg_bytes

CAP = 2048
CHUNK = 512


def _app(glimpse: Glimpse) -> Any:
    return glimpse.client._transport.app  # type: ignore[attr-defined]


@pytest.mark.parametrize("settings", [{"max_json_body_bytes": CAP}], indirect=True)
async def test_a_body_under_the_cap_is_read_as_usual(glimpse: Glimpse) -> None:
    response = await glimpse.client.post(
        "/api/v1/accounts",
        json={"username": "ada", "password": "correct horse", "display_name": "A" * 60},
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("settings", [{"max_json_body_bytes": CAP}], indirect=True)
async def test_a_declared_length_over_the_cap_is_413_before_any_of_the_body_is_read(
    glimpse: Glimpse,
) -> None:
    pulled = 0

    async def app_counting_reads(scope: Any, receive: Any, send: Any) -> None:
        async def counting() -> Any:
            nonlocal pulled
            pulled += 1
            return await receive()

        await _app(glimpse)(scope, counting, send)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_counting_reads), base_url="http://glimpse.test"
    ) as client:
        response = await client.post(
            "/api/v1/auth/token",
            content=b'{"username": "' + b"a" * CAP + b'", "password": "x"}',
            headers={"Content-Type": "application/json"},
        )
    error = assert_error(response, 413, "body_too_large")
    assert "2 KB" in error["message"]
    assert response.headers["connection"] == "close"
    assert pulled == 0


@pytest.mark.parametrize("settings", [{"max_json_body_bytes": CAP}], indirect=True)
async def test_a_chunked_body_is_413_as_soon_as_it_passes_the_cap(glimpse: Glimpse) -> None:
    produced = {"chunks": 0, "at_answer": -1}

    async def endless() -> AsyncIterator[bytes]:
        yield b'{"username": "'
        while produced["chunks"] < 10_000:
            produced["chunks"] += 1
            yield b"a" * CHUNK

    async def app_noting_the_answer(scope: Any, receive: Any, send: Any) -> None:
        async def noting(message: Any) -> None:
            if message["type"] == "http.response.start":
                produced["at_answer"] = produced["chunks"]
            await send(message)

        await _app(glimpse)(scope, receive, noting)

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_noting_the_answer), base_url="http://glimpse.test"
    ) as client:
        response = await client.post(
            "/api/v1/accounts",
            content=endless(),
            headers={"Content-Type": "application/json"},
        )
    assert_error(response, 413, "body_too_large")
    assert response.headers["connection"] == "close"
    # Answered within a chunk of passing the cap, not after the body ended.
    assert 0 < produced["at_answer"] * CHUNK <= CAP + CHUNK, produced


@pytest.mark.parametrize("settings", [{"max_json_body_bytes": 1024}], indirect=True)
async def test_the_streamed_upload_is_not_held_to_the_json_cap(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    photo = jpeg_bytes((800, 600))
    assert len(photo) > 1024
    response = await glimpse.upload(headers, [("a.jpg", photo)])
    assert response.status_code == 202, response.text


async def test_an_error_answered_before_the_body_was_read_closes_the_connection(
    glimpse: Glimpse,
) -> None:
    # No token: refused by a dependency, before the upload's body is read.
    response = await glimpse.client.post(
        "/api/v1/posts", files=[("file", ("a.jpg", jpeg_bytes(), "image/jpeg"))]
    )
    assert_error(response, 401)
    assert response.headers["connection"] == "close"
    headers = await glimpse.signup()
    response = await glimpse.client.post(
        "/api/v1/posts/1/like", headers=headers, content=b"x" * 100
    )  # a body no route reads
    assert_error(response, 404)
    assert response.headers["connection"] == "close"


async def test_an_error_answered_after_the_body_was_read_keeps_the_connection(
    glimpse: Glimpse,
) -> None:
    await glimpse.signup("ada")
    again = await glimpse.client.post(
        "/api/v1/accounts", json={"username": "ada", "password": "correct horse"}
    )
    assert_error(again, 409)
    assert "connection" not in again.headers
    missing = await glimpse.client.get("/api/v1/users/nobody")
    assert_error(missing, 401)
    assert "connection" not in missing.headers
