"""The rate-limit setting, request budgets and client addresses: pure functions."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from glimpse.api.throttling import client_address
from glimpse.config import Settings
from glimpse.throttling import DEFAULT_BUDGETS, parse_rate_limits, request_budget


def described(setting: str) -> dict[str, tuple[int, int]]:
    return {
        name: (item.amount, item.get_expiry()) for name, item in parse_rate_limits(setting).items()
    }


def test_the_design_setting_parses_to_its_four_budgets_and_the_social_ones() -> None:
    setting = "api=300/5minute;upload=30/30minute;signin_failures=5/minute;signup=100/hour"
    assert described(setting) == {
        "api": (300, 300),
        "upload": (30, 1800),
        "signin_failures": (5, 60),
        "signup": (100, 3600),
        # Not named in DESIGN.md's setting: they keep their defaults.
        "follows": (200, 3600),
        "comments": (100, 3600),
        "exports": (10, 86400),
    }
    assert described(setting) == described(";".join(f"{k}={v}" for k, v in DEFAULT_BUDGETS.items()))


@pytest.mark.parametrize("setting", ["off", "OFF", " off "])
def test_off_disables_every_budget(setting: str) -> None:
    assert parse_rate_limits(setting) == {}


def test_a_budget_left_out_keeps_its_default_and_one_can_be_turned_off() -> None:
    budgets = described("api=10/second; signup=off")
    assert budgets["api"] == (10, 1)
    assert "signup" not in budgets
    assert budgets["upload"] == (30, 1800)
    assert described("") == described("api=300/5minute")


def test_reads_and_writes_split_the_api_budget_when_named() -> None:
    shared = parse_rate_limits("api=10/minute")
    assert request_budget(shared, "GET") == request_budget(shared, "POST") == "api"
    split = parse_rate_limits("reads=100/minute;writes=10/minute")
    assert request_budget(split, "GET") == request_budget(split, "head") == "reads"
    assert request_budget(split, "DELETE") == "writes"
    only_writes = parse_rate_limits("writes=10/minute")
    assert request_budget(only_writes, "GET") == "api"
    assert request_budget(parse_rate_limits("api=off"), "GET") is None


@pytest.mark.parametrize(
    "setting",
    ["api", "api=lots", "apis=3/minute", "api=3/fortnight", "api=0/minute", "api:3/minute"],
)
def test_a_malformed_setting_is_refused_naming_the_part(setting: str) -> None:
    with pytest.raises(ValueError, match="rate limit"):
        parse_rate_limits(setting)


def scope(peer: str | None, *forwarded: str) -> dict[str, Any]:
    return {
        "type": "http",
        "client": (peer, 1234) if peer else None,
        "headers": [(b"x-forwarded-for", value.encode()) for value in forwarded],
    }


def test_without_trusted_proxies_the_socket_peer_is_the_client() -> None:
    assert client_address(scope("10.0.0.9", "1.2.3.4"), 0) == "10.0.0.9"
    assert client_address(scope(None), 0) == "unknown"


def test_behind_n_proxies_the_nth_forwarded_hop_from_the_right_is_the_client() -> None:
    # The client wrote "6.6.6.6" itself; the proxy appended the address it saw.
    assert client_address(scope("10.0.0.1", "6.6.6.6, 1.2.3.4"), 1) == "1.2.3.4"
    # Two proxies: the outer one appended the client, the inner one the outer proxy.
    assert client_address(scope("10.0.0.1", "6.6.6.6, 1.2.3.4", "10.0.0.2"), 2) == "1.2.3.4"


def test_fewer_forwarded_hops_than_trusted_proxies_falls_back_to_the_peer() -> None:
    assert client_address(scope("10.0.0.1", "1.2.3.4"), 2) == "10.0.0.1"
    assert client_address(scope("10.0.0.1"), 1) == "10.0.0.1"


def test_ipv6_clients_are_budgeted_by_their_64() -> None:
    one = client_address(scope("2001:db8:1:2::1"), 0)
    assert one == client_address(scope("2001:db8:1:2:ffff::9"), 0) == "2001:db8:1:2::/64"
    assert one != client_address(scope("2001:db8:1:3::1"), 0)
    assert client_address(scope("::ffff:1.2.3.4"), 0) == "1.2.3.4"


def test_settings_refuse_a_malformed_rate_limit_setting_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="rate limit"):
        Settings(data_dir=tmp_path, rate_limits="api=lots")
    assert Settings(data_dir=tmp_path, rate_limits="off").rate_limits == "off"


# -- the memory storage's expiry (glimpse.throttling.MovingWindowMemory) ------------------------


async def test_many_clients_cost_no_expiry_pass_with_a_thread_hop_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from limits.aio.storage import MemoryStorage

    from glimpse.throttling import Throttle

    passes: list[float] = []

    async def library_expiry_pass(self: Any) -> None:
        passes.append(1.0)

    monkeypatch.setattr(MemoryStorage, "_MemoryStorage__expire_events", library_expiry_pass)
    throttle = Throttle("api=300/5minute")
    try:
        for client in range(500):
            verdict = await throttle.hit("api", "token", str(client))
            assert verdict is not None and verdict.allowed
        await asyncio.sleep(0)  # let any task the storage scheduled run
        assert passes == []
    finally:
        await throttle.close()


async def test_spent_entries_are_dropped_once_their_window_has_passed() -> None:
    from glimpse.throttling import MovingWindowMemory, Throttle

    throttle = Throttle("api=2/second")
    storage = throttle._storage
    assert isinstance(storage, MovingWindowMemory)
    try:
        for _ in range(2):
            assert (await throttle.hit("api", "old")).allowed  # type: ignore[union-attr]
        assert not (await throttle.hit("api", "old")).allowed  # type: ignore[union-attr]
        await asyncio.sleep(1.1)
        storage._next_expiry = 0.0  # the next hit runs the (once a second) pass
        assert (await throttle.hit("api", "new")).allowed  # type: ignore[union-attr]
        assert not any("old" in key for key in storage.events)
        assert (await throttle.hit("api", "old")).allowed  # type: ignore[union-attr]
    finally:
        await throttle.close()
