"""Sign-in under load and against probing: the hash wait line, and constant work per attempt."""

from __future__ import annotations

import asyncio

import argon2
import pytest
from sqlalchemy import text

from glimpse.config import Settings
from tests.conftest import Glimpse, assert_error

CREDENTIALS = {"username": "alice", "password": "correct horse"}


@pytest.mark.parametrize(
    "settings",
    [
        {
            "password_hash_concurrency": 1,
            "password_hash_queue": 1,
            "rate_limits": "off",
            # The production cost: a hash must last long enough for the others to queue.
            "password_hash_time_cost": 3,
            "password_hash_memory_kib": 64 * 1024,
        }
    ],
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


@pytest.mark.parametrize(
    "settings", [{"password_hash_time_cost": 2, "password_hash_memory_kib": 4096}], indirect=True
)
async def test_passwords_are_hashed_at_the_cost_the_settings_give(glimpse: Glimpse) -> None:
    await glimpse.signup(**CREDENTIALS)
    async with glimpse.container.db.read() as session:
        stored = (
            await session.execute(text("SELECT password_hash FROM users WHERE username = 'alice'"))
        ).scalar_one()
    parameters = argon2.extract_parameters(stored)
    assert (parameters.time_cost, parameters.memory_cost) == (2, 4096)
    assert parameters.type is argon2.Type.ID


def test_the_default_cost_is_rfc_9106s_low_memory_choice() -> None:
    settings = Settings(secret_key="x")
    assert (settings.password_hash_time_cost, settings.password_hash_memory_kib) == (3, 65536)


class CountingHasher:
    """Stands in for the argon2 hasher inside PasswordHasher and records each verify."""

    def __init__(self, real: argon2.PasswordHasher) -> None:
        self.real = real
        self.verified: list[str] = []

    def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append(password_hash)
        return bool(self.real.verify(password_hash, password))

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))


@pytest.mark.parametrize("settings", [{"rate_limits": "off"}], indirect=True)
async def test_unknown_user_costs_the_same_argon2_verify_as_a_wrong_password(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    await glimpse.signup(**CREDENTIALS)
    passwords = glimpse.container.passwords
    counting = CountingHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", counting)

    attempts = {
        "wrong password": {"username": "alice", "password": "wrong horse"},
        "unknown user": {"username": "bob", "password": "wrong horse"},
        "impossible name": {"username": "Not A Name!", "password": "wrong horse"},
    }
    hashes = {}
    for label, body in attempts.items():
        counting.verified.clear()
        response = await glimpse.client.post("/api/v1/auth/token", json=body)
        assert_error(response, 401, "invalid_credentials")
        assert len(counting.verified) == 1, label  # exactly one argon2 verify, on every path
        hashes[label] = counting.verified[0]

    # The same work each time: hashes of the same algorithm and cost parameters.
    parameters = {label: argon2.extract_parameters(h) for label, h in hashes.items()}
    assert all(p == parameters["wrong password"] for p in parameters.values()), parameters
    assert hashes["unknown user"] != hashes["wrong password"]  # the dummy, not alice's
