"""Request ids (API.md: `X-Request-ID` on every response), the line each request logs, and the
jobs a request enqueues logging under its id."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import pytest

from glimpse.ops.request_ids import REQUEST_ID
from tests.api.test_upload_validation import process
from tests.conftest import Glimpse


def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "glimpse.access"]


def fields(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = getattr(record, "fields", {})
    return found


async def test_every_answer_has_its_own_request_id(glimpse: Glimpse) -> None:
    answers = [
        await glimpse.client.get("/healthz"),
        await glimpse.client.get("/api/v1/posts/1"),  # 401
        await glimpse.client.get("/no/such/page/at/all"),  # 404
        await glimpse.client.post(
            "/api/v1/accounts",
            content=b"x" * (glimpse.container.settings.max_json_body_bytes + 1),
            headers={"content-type": "application/json"},
        ),  # 413, refused before the body is read
    ]
    ids = [a.headers["x-request-id"] for a in answers]
    assert [a.status_code for a in answers] == [200, 401, 404, 413]
    assert len(set(ids)) == len(ids) and all(len(i) == 32 for i in ids)
    # Let go once answered: nothing written afterwards in the same context claims to be for it.
    assert REQUEST_ID.get() is None


async def test_a_client_s_own_request_id_is_not_trusted_without_a_proxy(glimpse: Glimpse) -> None:
    answer = await glimpse.client.get("/healthz", headers={"X-Request-ID": "forged-id-123"})
    assert answer.headers["x-request-id"] != "forged-id-123"
    assert answer.headers.get_list("x-request-id") == [answer.headers["x-request-id"]]


@pytest.mark.parametrize("settings", [{"trusted_proxy_hops": 1}], indirect=True)
async def test_behind_a_trusted_proxy_its_well_formed_request_id_is_kept(glimpse: Glimpse) -> None:
    kept = await glimpse.client.get("/healthz", headers={"X-Request-ID": "edge-7f3a:42"})
    assert kept.headers["x-request-id"] == "edge-7f3a:42"
    for bad in ("has space", "x" * 129, 'quote"d', "semi;colon"):
        answer = await glimpse.client.get("/healthz", headers={"X-Request-ID": bad})
        assert answer.headers["x-request-id"] != bad and len(answer.headers["x-request-id"]) == 32


async def test_a_request_logs_one_line_with_its_id_route_caller_and_sizes(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await glimpse.signup()
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glimpse.access"):
        answer = await glimpse.client.get("/api/v1/users/alice", headers=headers)
    [line] = access_lines(caplog)
    assert getattr(line, "request_id", None) == answer.headers["x-request-id"]
    assert fields(line) | {"duration_ms": 0} == {
        "method": "GET",
        "route": "/api/v1/users/{username}",  # the template, never the path
        "status": 200,
        "duration_ms": 0,
        "user_id": me["id"],  # (a string, as the API gives ids)
        "bytes_in": 0,
        "bytes_out": len(answer.content),
    }
    assert fields(line)["duration_ms"] > 0


async def test_a_request_s_line_counts_the_body_it_sent(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await glimpse.signup()
    body = b'{"bio": "' + b"x" * 500 + b'"}'
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glimpse.access"):
        answer = await glimpse.client.patch(
            "/api/v1/me", headers={**headers, "Content-Type": "application/json"}, content=body
        )
    assert answer.status_code == 200, answer.text
    [line] = access_lines(caplog)
    assert (fields(line)["route"], fields(line)["bytes_in"]) == ("/api/v1/me", len(body))
    assert fields(line)["bytes_out"] == len(answer.content)


async def test_no_signature_of_a_signed_media_url_reaches_the_log(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await glimpse.signup()
    assert (
        await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    ).status_code == 200
    post = await process(glimpse, headers, await glimpse.upload(headers))
    url = post["media"][0]["variants"][0]["url"]
    query = urlsplit(url).query
    assert "sig=" in query
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert (await glimpse.client.get(url)).status_code == 200
    [line] = access_lines(caplog)
    assert fields(line)["route"] == "/media/{key:path}"
    signature = dict(p.split("=", 1) for p in query.split("&"))["sig"]
    # (The test's own HTTP client, httpx, logs the URL it fetched: the server's lines are checked.)
    server_lines = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert server_lines
    leaking = [r for r in server_lines if signature in r.getMessage() + str(fields(r))]
    assert not leaking, [(r.name, r.getMessage()[:300]) for r in leaking]


async def test_the_jobs_a_request_enqueues_log_under_its_id(
    glimpse: Glimpse, caplog: pytest.LogCaptureFixture
) -> None:
    headers = await glimpse.signup()
    follower = await glimpse.signup("bob")  # so that the post is fanned out too
    followed = await glimpse.client.post("/api/v1/users/alice/follow", headers=follower)
    assert followed.status_code == 200, followed.text
    await glimpse.run_jobs()
    upload = await glimpse.upload(headers)
    request_id = upload.headers["x-request-id"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="glimpse.worker"):
        await glimpse.run_jobs()
    runs = {
        fields(r)["kind"]: r
        for r in caplog.records
        if r.name == "glimpse.worker" and "job_id" in fields(r)
    }
    # The fan-out was enqueued by the processing job: it inherits the id in turn.
    assert {"process_media", "fan_out_post"} <= set(runs), sorted(runs)
    for kind in ("process_media", "fan_out_post"):
        assert getattr(runs[kind], "request_id", None) == request_id, kind
        assert fields(runs[kind])["outcome"] == "done" and fields(runs[kind])["attempt"] == 1
        assert fields(runs[kind])["duration_ms"] > 0
    # Handlers never see the id in their payload.
    post = await glimpse.client.get(f"/api/v1/posts/{upload.json()['id']}", headers=headers)
    assert post.json()["status"] == "ready"
