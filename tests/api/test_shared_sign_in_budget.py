"""Failed sign-ins across two API processes sharing one Redis: the `signin_failures` budget is
one budget, also for attempts that arrive at once. Each process reserved the places of its
attempts in flight in its own memory, so N processes admitted N times the budget to a burst
split across them (README: "N API replicas share one budget per client rather than granting N")."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from glimpse.config import Settings
from tests.api.test_throttling import ALICE, GENEROUS
from tests.conftest import Glimpse, running
from tests.redis_service import RedisProxy, redis_url  # noqa: F401  (a fixture)


@pytest.fixture
def settings(settings: Settings, redis_url: str) -> Settings:  # noqa: F811
    update: dict[str, Any] = {"cache_url": redis_url}
    if settings.rate_limits == "off":  # (a test's own settings keep theirs)
        update["rate_limits"] = f"{GENEROUS};signin_failures=3/minute"
    return settings.model_copy(update=update)


@pytest.fixture
async def other(settings: Settings) -> AsyncIterator[Glimpse]:
    """A second API process over the same database and Redis (its memory its own)."""
    async with running(settings) as glimpse:
        yield glimpse


async def test_a_burst_of_failed_sign_ins_split_across_processes_admits_the_budget_once(
    glimpse: Glimpse, other: Glimpse
) -> None:
    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    responses = await asyncio.gather(
        *(
            process.client.post("/api/v1/auth/token", json={**ALICE, "password": f"guess {i}"})
            for i in range(8)
            for process in (glimpse, other)
        )
    )
    assert Counter(r.status_code for r in responses) == {401: 3, 429: 13}


async def test_with_redis_down_a_burst_admits_the_budget_of_the_process(
    settings: Settings,
    redis_url: str,  # noqa: F811
) -> None:
    proxy = RedisProxy()
    await proxy.start()
    prefix = redis_url.rsplit("prefix=", 1)[1]
    try:
        async with running(settings.model_copy(update={"cache_url": proxy.url(prefix)})) as app:
            await app.client.post("/api/v1/accounts", json=ALICE)
            await proxy.stop()
            # Counted in the process's memory meanwhile: its places too (and no error).
            responses = await asyncio.gather(
                *(
                    app.client.post("/api/v1/auth/token", json={**ALICE, "password": f"guess {i}"})
                    for i in range(8)
                )
            )
            assert Counter(r.status_code for r in responses) == {401: 3, 429: 5}
    finally:
        await proxy.stop()


@pytest.mark.parametrize(
    "settings",
    [{"rate_limits": f"{GENEROUS};signin_failures=3/minute", "trusted_proxy_hops": 1}],
    indirect=True,
)
async def test_the_owner_known_at_one_process_gets_in_at_another_during_an_attack(
    glimpse: Glimpse, other: Glimpse
) -> None:
    def sign_in(process: Glimpse, address: str, password: str) -> Any:
        return process.client.post(
            "/api/v1/auth/token",
            json={**ALICE, "password": password},
            headers={"X-Forwarded-For": address},
        )

    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    assert (await sign_in(glimpse, "10.0.0.1", ALICE["password"])).status_code == 200
    # A botnet spends the account's budget for strangers, through both processes.
    for i in range(3):
        assert (await sign_in((glimpse, other)[i % 2], f"6.6.6.{i}", "guess")).status_code == 401
    assert (await sign_in(other, "6.6.6.9", "guess")).status_code == 429
    # The owner, from the address it signed in from before, gets in wherever the proxy sends it.
    assert (await sign_in(other, "10.0.0.1", ALICE["password"])).status_code == 200
