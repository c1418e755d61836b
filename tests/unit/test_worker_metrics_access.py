"""`glimpse worker`'s own /metrics (ops/worker_metrics.py) answers as the API's does: with a
token, to its bearer only; without one, to this machine only, whatever address it is bound to."""

from __future__ import annotations

import httpx
import pytest

from glimpse.ops.worker_metrics import metrics_app


async def _get(token: str, client: str, headers: dict[str, str] | None = None) -> int:
    transport = httpx.ASGITransport(app=metrics_app(token), client=(client, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as c:
        return (await c.get("/metrics", headers=headers)).status_code


@pytest.mark.parametrize(
    ("client", "headers", "status"),
    [
        ("127.0.0.1", None, 200),
        ("::1", None, 200),
        ("192.0.2.7", None, 404),  # another host, GLIMPSE_WORKER_METRICS_HOST=0.0.0.0
        ("127.0.0.1", {"X-Forwarded-For": "192.0.2.7"}, 404),  # through a proxy on this host
    ],
)
async def test_without_a_token_only_this_machine_reads_them(
    client: str, headers: dict[str, str] | None, status: int
) -> None:
    assert await _get("", client, headers) == status


async def test_with_a_token_its_bearer_reads_them_from_anywhere() -> None:
    assert await _get("scrape-me", "192.0.2.7") == 401
    bearer = {"Authorization": "Bearer scrape-me"}
    assert await _get("scrape-me", "192.0.2.7", bearer) == 200
    assert await _get("scrape-me", "127.0.0.1", {"Authorization": "Bearer wrong"}) == 401
