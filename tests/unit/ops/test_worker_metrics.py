"""`glimpse worker`'s own /metrics (ops/worker_metrics.py), as a plain ASGI app: the token the API's
/metrics asks for is asked for here too, and the queue's gauges are what the queue says."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from glimpse.ops.worker_metrics import metrics_app, update_queue_gauges


async def _get(token: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=metrics_app(token))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker.test") as client:
        return await client.get("/metrics", headers=headers)


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nope", "Basic scrape-me", "scrape-me", "Bearer scrape-me2"]
)
async def test_the_worker_s_metrics_refuse_a_missing_or_wrong_token(
    authorization: str | None,
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    assert (await _get("scrape-me", **headers)).status_code == 401


async def test_the_worker_s_metrics_answer_the_right_token_or_anyone_when_none_is_set() -> None:
    right = await _get("scrape-me", Authorization="Bearer scrape-me")
    assert right.status_code == 200 and "glimpse_jobs_run_total" in right.text
    assert (await _get("")).status_code == 200


class _Queue:
    def __init__(self, counts: dict[str, int], oldest: float) -> None:
        self.counts, self.oldest = counts, oldest

    async def state_counts(self) -> dict[str, int]:
        return self.counts

    async def oldest_due_age(self) -> float:
        return self.oldest


async def test_the_worker_s_queue_gauges_are_what_the_queue_reports() -> None:
    container: Any = SimpleNamespace(queue=_Queue({"queued": 7, "dead": 2}, 42.5))
    await update_queue_gauges(container)

    def gauge(name: str, **labels: str) -> float | None:
        return REGISTRY.get_sample_value(name, labels)

    assert gauge("glimpse_jobs", state="queued") == 7
    assert gauge("glimpse_jobs", state="dead") == 2
    assert gauge("glimpse_jobs", state="running") == 0  # a state the queue did not name
    assert gauge("glimpse_jobs_oldest_due_age_seconds") == 42.5
