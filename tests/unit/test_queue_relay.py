"""The relay's rule for which due rows to publish, and the RabbitMQ URL's own parameters."""

from __future__ import annotations

import pytest

from glimpse.backends.queue.relay import DueJob, needs_publishing, relayed_at, relayed_marker


def due(state: str = "queued", locked_by: str | None = None) -> DueJob:
    return DueJob(id=1, name="n", state=state, attempts=0, available_at=0.0, locked_by=locked_by)


def test_a_row_never_published_is_published() -> None:
    assert needs_publishing(due(), 100.0, stale_after=30, queue_idle=False)


def test_a_running_row_that_is_due_has_a_lapsed_lease_and_is_published_again() -> None:
    assert needs_publishing(due("running", "host:1:abc"), 100.0, stale_after=30, queue_idle=False)


@pytest.mark.parametrize(
    ("age", "idle", "expected"),
    [(5, True, False), (40, False, False), (40, True, True)],
)
def test_a_published_row_is_published_again_only_when_long_waiting_and_its_queue_is_empty(
    age: float, idle: bool, expected: bool
) -> None:
    job = due(locked_by=relayed_marker(100.0 - age))
    assert needs_publishing(job, 100.0, stale_after=30, queue_idle=idle) is expected


def test_the_marker_reads_back_and_a_worker_s_name_is_not_one() -> None:
    assert relayed_at(relayed_marker(12.5)) == 12.5
    assert relayed_at("host:1:abc") is None
    assert relayed_at(None) is None


def test_the_url_s_own_parameters_are_not_passed_to_the_broker() -> None:
    pytest.importorskip("aio_pika")
    from glimpse.backends.queue.rabbitmq import split_url

    url, own = split_url("amqp://u:p@h:5672/v?prefix=x.&heartbeat=30&prefetch=2")
    assert url == "amqp://u:p@h:5672/v?heartbeat=30"
    assert own == {"prefix": "x.", "prefetch": "2"}
