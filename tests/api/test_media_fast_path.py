"""Media requests are answered by the lean path (media/fast_path.py) without reaching FastAPI's
stack, with what that stack owes every answer: request ids, nosniff, metrics and the access log,
the connection cap; server trouble is handed to the full stack's error handlers."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import OperationalError
from starlette.types import Receive, Scope, Send

from glimpse.app import GlimpseApp, create_app
from glimpse.config import Settings
from glimpse.media import fast_path
from glimpse.media.fast_path import ROUTE_TEMPLATE, MediaFastPath
from glimpse.ops.metrics import REQUESTS
from glimpse.posts import service as posts_service
from tests.conftest import Glimpse, jpeg_bytes
from tests.databases import migrate


@dataclass
class Stack:
    glimpse: Glimpse
    fast: MediaFastPath
    reached: list[str]  # paths of the requests FastAPI's stack was asked to answer


def _fast_path(app: GlimpseApp) -> MediaFastPath:
    assert app.media_fast_path is not None
    return app.media_fast_path


async def _stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    migrate(settings.resolved_database_url)
    app = create_app(settings)
    reached: list[str] = []
    full_stack = FastAPI.__call__

    async def spy(self: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            reached.append(scope["path"])
        await full_stack(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", spy)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://glimpse.test") as c:
            yield Stack(Glimpse(c, app.state.container), _fast_path(app), reached)


@pytest.fixture
async def stack(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    async for made in _stack(settings, monkeypatch):
        yield made


@pytest.fixture
async def proxied(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    update = {"trusted_proxy_hops": 1}
    async for made in _stack(settings.model_copy(update=update), monkeypatch):
        yield made


async def _variant(glimpse: Glimpse, *, private: bool = False) -> tuple[str, dict[str, str]]:
    headers = await glimpse.signup("alice")
    if private:
        await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    response = await glimpse.upload(headers, files=[("p.jpg", jpeg_bytes((400, 300)))])
    await glimpse.run_jobs()
    post_id = response.json()["id"]
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
    [url] = [
        v["url"]
        for v in post["media"][0]["variants"]
        if v["name"] == "w320" and v["content_type"] == "image/jpeg"
    ]
    return url, headers


def _count(status: str, method: str = "GET") -> float:
    return REQUESTS.labels(method, ROUTE_TEMPLATE, status)._value.get()  # type: ignore[attr-defined]


async def test_media_is_answered_without_the_full_stack(stack: Stack) -> None:
    client = stack.glimpse.client
    url, _ = await _variant(stack.glimpse)
    stack.reached.clear()
    whole = await client.get(url)
    assert whole.status_code == 200
    etag = whole.headers["etag"]
    answers = [
        (await client.get(url, headers={"If-None-Match": etag}), 304),
        (await client.get(url, headers={"Range": "bytes=0-9"}), 206),
        (await client.get(url, headers={"Range": "bytes=999999-"}), 416),
        (await client.head(url), 200),
        (await client.get("/media/v/aa/" + "a" * 64 + ".jpg"), 404),
        (await client.get("/media/originals/1/2"), 404),
    ]
    for answer, status in answers:
        assert answer.status_code == status, answer.request
    assert stack.reached == []
    assert answers[1][0].content == whole.content[:10]
    assert answers[3][0].content == b""
    # Errors in API.md's shape.
    assert answers[5][0].json()["error"]["code"] == "media_not_found"
    assert answers[2][0].json()["error"]["code"] == "range_not_satisfiable"
    # What is not a GET or HEAD of media goes through the full stack as before.
    assert (await client.post(url)).status_code == 405
    assert (await client.get("/healthz")).status_code == 200
    assert stack.reached == [url, "/healthz"]


async def test_media_answers_carry_request_ids_nosniff_and_no_server(stack: Stack) -> None:
    client = stack.glimpse.client
    url, _ = await _variant(stack.glimpse)
    ids = set()
    for target in (url, "/media/nothing"):
        answer = await client.get(target, headers={"X-Request-ID": "client-chosen"})
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "server" not in answer.headers
        assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])
        ids.add(answer.headers["x-request-id"])
    assert len(ids) == 2  # (not trusted without a proxy in front: made here, each its own)


async def test_a_trusted_proxy_request_id_is_kept(proxied: Stack) -> None:
    url, _ = await _variant(proxied.glimpse)
    answer = await proxied.glimpse.client.get(url, headers={"X-Request-ID": "edge-0123"})
    assert answer.headers["x-request-id"] == "edge-0123"
    forged = await proxied.glimpse.client.get(url, headers={"X-Request-ID": "bad\x7fid"})
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])


async def test_media_requests_are_counted_and_logged_by_route(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    client = stack.glimpse.client
    _, headers = await _variant(stack.glimpse, private=True)
    post = (await client.get("/api/v1/users/alice/posts", headers=headers)).json()["items"][0]
    [signed] = [
        v["url"]
        for v in post["media"][0]["variants"]
        if v["name"] == "w320" and v["content_type"] == "image/jpeg"
    ]
    ok, missing, heads = _count("200"), _count("404"), _count("200", "HEAD")
    with caplog.at_level(logging.INFO, logger="glimpse.access"):
        caplog.clear()  # (the sign-up and the upload before: their lines are not ours)
        assert (await client.get(signed)).status_code == 200
        assert (await client.get(signed.split("?")[0])).status_code == 404  # unsigned private
        assert (await client.head(signed)).status_code == 200
    assert (_count("200"), _count("404"), _count("200", "HEAD")) == (ok + 1, missing + 1, heads + 1)
    lines = [r for r in caplog.records if r.name == "glimpse.access"]
    assert [r.fields["status"] for r in lines] == [200, 404, 200]  # type: ignore[attr-defined]
    assert all(r.fields["route"] == ROUTE_TEMPLATE for r in lines)  # type: ignore[attr-defined]
    # The signature never reaches a log line.
    signature = signed.split("sig=")[1].split("&")[0]
    assert all(signature not in r.getMessage() + str(r.__dict__) for r in lines)


async def test_server_trouble_is_answered_by_the_full_stack(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = await _variant(stack.glimpse)
    stack.glimpse.container.origin_cache._entries.clear()

    async def gone(*args: object) -> None:
        raise OperationalError(
            "SELECT", {}, Exception("server closed"), connection_invalidated=True
        )

    monkeypatch.setattr(posts_service, "media_visibility", gone)
    stack.reached.clear()
    answer = await stack.glimpse.client.get(url)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert stack.reached == [url]


async def test_media_counts_against_the_connection_cap(stack: Stack) -> None:
    url, _ = await _variant(stack.glimpse)
    occupancy = stack.fast.occupancy
    stack.reached.clear()
    occupancy.active = occupancy.limit  # as if that many requests were in progress
    try:
        answer = await stack.glimpse.client.get(url)
    finally:
        occupancy.active = 0
    assert answer.status_code == 503 and answer.json()["error"]["code"] == "busy"
    assert answer.headers["retry-after"]
    assert stack.reached == [url]
    assert (await stack.glimpse.client.get(url)).status_code == 200


async def test_public_media_names_the_edge_validity_and_private_media_does_not(
    stack: Stack,
) -> None:
    client = stack.glimpse.client
    url, headers = await _variant(stack.glimpse)
    seconds = stack.glimpse.container.settings.edge_cache_seconds
    public = await client.get(url)
    assert public.headers["x-accel-expires"] == str(seconds)
    etag = public.headers["etag"]
    revalidated = await client.get(url, headers={"If-None-Match": etag})
    assert revalidated.status_code == 304  # (what nginx asks when its copy is due)
    assert revalidated.headers["x-accel-expires"] == str(seconds)
    await client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    stack.glimpse.container.origin_cache._entries.clear()
    post = (await client.get("/api/v1/users/alice/posts", headers=headers)).json()["items"][0]
    [signed] = [
        v["url"]
        for v in post["media"][0]["variants"]
        if v["name"] == "w320" and v["content_type"] == "image/jpeg"
    ]
    private = await client.get(signed)
    assert private.status_code == 200 and "x-accel-expires" not in private.headers
    gone = await client.get(url, headers={"If-None-Match": etag})
    assert gone.status_code == 404 and "x-accel-expires" not in gone.headers


async def test_a_repeated_query_parameter_is_read_as_fastapi_read_it(stack: Stack) -> None:
    # The last of a repeated name wins, as it did when the FastAPI route parsed the query.
    signed, _ = await _variant(stack.glimpse, private=True)
    plain, query = signed.split("?", 1)
    assert (await stack.glimpse.client.get(f"{plain}?sig=forged&{query}")).status_code == 200
    forged_last = await stack.glimpse.client.get(f"{plain}?{query}&sig=forged")
    assert forged_last.status_code == 404


# (The tests' TTL is 0 otherwise: every request asks who may see the key.)
@pytest.mark.parametrize("settings", [{"origin_cache_ttl_seconds": 60}], indirect=True)
async def test_a_hot_public_file_gets_the_answers_it_got_before_until_its_entry_goes(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = stack.glimpse.client
    url, headers = await _variant(stack.glimpse)
    first = await client.get(url)
    etag = first.headers["etag"]
    first_304 = await client.get(url, headers={"If-None-Match": etag})
    asked: list[str] = []
    answer_media = fast_path.answer_media

    async def counted(container: object, key: str, **kwargs: object) -> object:
        asked.append(key)
        return await answer_media(container, key, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(fast_path, "answer_media", counted)
    again = await client.get(url)
    again_304 = await client.get(url, headers={"If-None-Match": f'"other", {etag}'})
    assert asked == []  # (the answers made for the first two)
    assert again.content == first.content and again_304.status_code == 304
    for before, after in ((first, again), (first_304, again_304)):
        assert before.headers.keys() == after.headers.keys()
        for name in before.headers.keys() - {"x-request-id"}:
            assert before.headers[name] == after.headers[name], name
        assert before.headers["x-request-id"] != after.headers["x-request-id"]
    # A range, a HEAD or a query string is answer_media's to answer, as before.
    assert (await client.get(url, headers={"Range": "bytes=0-9"})).status_code == 206
    assert (await client.head(url)).status_code == 200
    assert (await client.get(url + "?v=1")).status_code == 200
    assert len(asked) == 3
    # The answers go with the entry: once who may see it is asked again (the TTL passed), a
    # post gone private is not served from them.
    await client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    stack.glimpse.container.origin_cache._entries.clear()
    assert (await client.get(url)).status_code == 404
    assert (await client.get(url, headers={"If-None-Match": etag})).status_code == 404
