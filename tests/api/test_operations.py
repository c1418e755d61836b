"""/healthz, /readyz and /metrics (API.md, Operations)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from sqlalchemy import event, text

from tests.api.test_upload_validation import process
from tests.conftest import Glimpse
from tests.databases import ON_EVERY_DATABASE


def sample(metrics: str, metric: str, **labels: str) -> float:
    """The value of one sample in Prometheus text, 0 when it is not there yet."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in metrics.splitlines():
        match = re.fullmatch(rf"{metric}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_healthz_answers_while_the_process_lives(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readyz_checks_every_backend_with_a_real_round_trip(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 200
    checks = {"database": "ok", "storage": "ok", "queue": "ok"}
    if glimpse.container.settings.cache_url:  # (Redis, when one is configured)
        checks["cache"] = "ok"
    assert response.json() == {"status": "ready", "checks": checks}


async def test_readyz_is_503_with_the_reason_when_the_schema_is_not_at_head(
    glimpse: Glimpse,
) -> None:
    async with glimpse.container.db.write() as session:
        await session.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"].startswith("failed: migrations are at 0001")
    assert body["checks"]["storage"] == "ok"


@ON_EVERY_DATABASE
async def test_readyz_is_503_while_the_database_takes_reads_but_no_writes_and_back(
    glimpse: Glimpse,
) -> None:
    # A read-only database (a demoted primary, a read-only disk) still answers the schema
    # check's read; only the write path shows that no post can be written.
    db = glimpse.container.db
    read_only_sql = (
        "PRAGMA query_only=ON"
        if glimpse.container.settings.is_sqlite
        else "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"
    )

    def read_only(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(read_only_sql)
        cursor.close()
        dbapi_connection.commit()  # (asyncpg's adapter ran it in a transaction of its own)

    await db.write_engine.dispose()
    event.listen(db.write_engine.sync_engine, "connect", read_only)
    try:
        response = await glimpse.client.get("/readyz")
        assert response.status_code == 503, response.text
        checks = response.json()["checks"]
        assert checks["database"].startswith("failed: cannot write to the database:"), checks
        assert checks["storage"] == checks["queue"] == "ok", checks
    finally:
        event.remove(db.write_engine.sync_engine, "connect", read_only)
        await db.write_engine.dispose()
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 200, response.text


async def test_readyz_writes_to_the_store_and_leaves_nothing_there(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On the local disk, and on S3 with GLIMPSE_TEST_STORAGE=s3.
    storage = glimpse.container.storage
    written: list[str] = []
    put_bytes = storage.put_bytes

    async def recorded(key: str, data: bytes, content_type: str) -> None:
        written.append(key)
        await put_bytes(key, data, content_type)

    monkeypatch.setattr(storage, "put_bytes", recorded)
    for _ in range(3):
        assert (await glimpse.client.get("/readyz")).status_code == 200
    assert len(set(written)) == 3 and all(k.startswith("readyz/") for k in written)
    # Several at once, as from several proxies: they share the round trips under way.
    answers = await asyncio.gather(*(glimpse.client.get("/readyz") for _ in range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    print(f"6 concurrent /readyz wrote {len(written) - 3} probe(s)")
    assert len(written) - 3 < 6
    assert await storage.list_keys("readyz") == []


async def test_readyz_is_503_when_storage_cannot_be_written(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(glimpse.container.storage, "put_bytes", broken)
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["storage"] == "failed: No space left on device"


async def test_metrics_count_requests_by_route_and_jobs_by_outcome(glimpse: Glimpse) -> None:
    before = (await glimpse.client.get("/metrics")).text
    headers = await glimpse.signup()
    await glimpse.upload(headers)
    await glimpse.client.get("/api/v1/users/nobody", headers=headers)
    assert await glimpse.run_jobs() == 2  # the photo, then the post's fan-out

    response = await glimpse.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    route = {"method": "GET", "route": "/api/v1/users/{username}", "status": "404"}
    requests = "glimpse_http_requests_total"
    assert sample(after, requests, **route) == sample(before, requests, **route) + 1
    done = {"name": "process_media", "outcome": "done"}
    runs = "glimpse_jobs_run_total"
    assert sample(after, runs, **done) == sample(before, runs, **done) + 1
    # Nothing is due; waiting for later: the guard that would purge the variants had processing
    # died before recording them.
    assert sample(after, "glimpse_jobs", state="queued") == 0
    assert sample(after, "glimpse_jobs", state="scheduled") == 1
    assert sample(after, "glimpse_jobs", state="running") == 0


async def test_head_requests_are_counted_as_head_under_their_route(glimpse: Glimpse) -> None:
    before = (await glimpse.client.get("/metrics")).text
    assert (await glimpse.client.head("/healthz")).status_code == 200
    assert (await glimpse.client.head("/api/v1/filters")).status_code == 401
    after = (await glimpse.client.get("/metrics")).text
    requests = "glimpse_http_requests_total"
    for route, status in (("/healthz", "200"), ("/api/v1/filters", "401")):
        labels = {"method": "HEAD", "route": route, "status": status}
        assert sample(after, requests, **labels) == sample(before, requests, **labels) + 1


async def test_every_matched_route_has_its_own_label_and_unknown_paths_share_one(
    glimpse: Glimpse,
) -> None:
    before = (await glimpse.client.get("/metrics")).text
    for path in ("/docs", "/openapi.json", "/no/such/page", "/another/unknown"):
        await glimpse.client.get(path)
    after = (await glimpse.client.get("/metrics")).text
    requests = "glimpse_http_requests_total"
    for route, status, count in (
        ("/docs", "200", 1),
        ("/openapi.json", "200", 1),
        ("unmatched", "404", 2),
    ):
        labels = {"method": "GET", "route": route, "status": status}
        assert sample(after, requests, **labels) == sample(before, requests, **labels) + count
    assert "/no/such/page" not in after


async def test_what_start_up_made_is_out_of_the_collectors_sight(glimpse: Glimpse) -> None:
    # gc.freeze() after start-up: full collections no longer walk the app's long-lived objects.
    import gc

    assert gc.get_freeze_count() > 10_000


async def test_readyz_is_503_while_the_process_drains_and_the_api_still_answers(
    glimpse: Glimpse,
) -> None:
    app = glimpse.client._transport.app  # type: ignore[attr-defined]
    app.state.draining = True
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"process": "draining: shutting down"},
    }
    assert (await glimpse.client.get("/healthz")).status_code == 200
    headers = await glimpse.signup()  # still serving while the proxy takes it out
    assert (await glimpse.client.get("/api/v1/me", headers=headers)).status_code == 200


async def test_each_request_is_counted_under_its_own_status_and_timed_under_its_route(
    glimpse: Glimpse,
) -> None:
    # Two statuses of one route, and a media read (answered in front of the app, by
    # media/fast_path.py): each in its own sample, each in the latency histogram.
    headers = await glimpse.signup()
    post = await process(glimpse, headers, await glimpse.upload(headers))
    media_url = post["media"][0]["variants"][0]["url"]
    before = (await glimpse.client.get("/metrics")).text
    assert (await glimpse.client.get("/api/v1/users/alice", headers=headers)).status_code == 200
    for _ in range(2):
        answer = await glimpse.client.get("/api/v1/users/nobody", headers=headers)
        assert answer.status_code == 404
    assert (await glimpse.client.get(media_url)).status_code == 200
    after = (await glimpse.client.get("/metrics")).text

    def moved(metric: str, **labels: str) -> float:
        return sample(after, metric, **labels) - sample(before, metric, **labels)

    requests = "glimpse_http_requests_total"
    timed = "glimpse_http_request_duration_seconds_count"
    users = {"method": "GET", "route": "/api/v1/users/{username}"}
    media = {"method": "GET", "route": "/media/{key:path}"}
    assert moved(requests, **users, status="200") == 1
    assert moved(requests, **users, status="404") == 2
    assert moved(timed, **users) == 3
    assert moved(requests, **media, status="200") == 1
    assert moved(timed, **media) == 1


async def test_readyz_names_a_backend_that_hangs_as_timed_out(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glimpse.ops import routes

    # API.md: /readyz turns within 15 s of a failure; its answer may be one check's time old
    # (the round trips under way are shared), and its own checks take one more.
    assert 2 * routes.CHECK_TIMEOUT_SECONDS <= 15

    async def hanging() -> None:
        await asyncio.sleep(3600)

    monkeypatch.setattr(routes, "CHECK_TIMEOUT_SECONDS", 1.0)
    monkeypatch.setattr(glimpse.container.queue, "check", hanging)
    # (Bounded here too: a /readyz that waits on the hanging backend fails, never hangs.)
    response = await asyncio.wait_for(glimpse.client.get("/readyz"), 30)
    assert response.status_code == 503
    assert response.json()["checks"]["queue"] == "timed out"


@pytest.mark.embedded  # (SQLite's own file)
async def test_readyz_is_503_when_the_database_file_was_replaced(glimpse: Glimpse) -> None:
    import os
    import shutil

    from sqlalchemy.engine import make_url

    settings = glimpse.container.settings
    if not settings.is_sqlite:
        pytest.skip("an embedded database only")
    assert (await glimpse.client.get("/readyz")).status_code == 200  # (its file, as opened)
    path = make_url(settings.resolved_database_url).database
    assert path
    shutil.copyfile(path, path + ".copy")
    os.replace(path + ".copy", path)  # (a restore done under a running server)
    response = await glimpse.client.get("/readyz")
    assert response.status_code == 503
    assert "was replaced" in response.json()["checks"]["database"]
