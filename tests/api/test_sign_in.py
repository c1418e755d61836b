"""Sign-in under load and against probing: the hash wait line, and constant work per attempt."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import Glimpse, assert_error

CREDENTIALS = {"username": "alice", "password": "correct horse"}


@pytest.mark.parametrize(
    "settings",
    [{"password_hash_concurrency": 1, "password_hash_queue": 1, "rate_limits": "off"}],
    indirect=True,
)
async def test_a_sign_in_flood_is_shed_with_503_not_queued(glimpse: Glimpse) -> None:
    await glimpse.signup(**CREDENTIALS)
    responses = await asyncio.gather(
        *(glimpse.client.post("/api/v1/auth/token", json=CREDENTIALS) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) >= 2  # one hashing, one waiting
    for response in responses:
        if response.status_code == 503:
            assert_error(response, 503, "busy")
            assert int(response.headers["Retry-After"]) >= 1
