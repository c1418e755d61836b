"""Headers on every answer, /docs without a CDN, and who may read /metrics (issue 12, rows 9
and 10)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi.responses import JSONResponse

from tests.conftest import Glimpse, assert_error


def _app(glimpse: Glimpse) -> Any:
    return glimpse.client._transport.app  # type: ignore[attr-defined]


def _client(glimpse: Glimpse, **transport: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=_app(glimpse), **transport),
        base_url="http://glimpse.test",
    )


# --- nosniff, no-store, no Server ---------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"max_json_body_bytes": 1024}], indirect=True)
async def test_every_answer_says_nosniff(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    answers = [
        await glimpse.client.get("/healthz"),
        await glimpse.client.get("/readyz"),
        await glimpse.client.get("/docs"),
        await glimpse.client.get("/openapi.json"),
        await glimpse.client.get("/api/v1/me", headers=headers),
        await glimpse.client.get("/api/v1/me"),  # 401
        await glimpse.client.get("/no/such/page"),  # 404
        await glimpse.client.put("/healthz"),  # 405
        await glimpse.client.post("/api/v1/accounts", content=b"{" * 2000),  # 413, a middleware's
        await glimpse.client.head("/healthz"),
    ]
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", response.request.url


async def test_the_apis_json_answers_are_not_stored_by_any_cache(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    me = await glimpse.client.get("/api/v1/me", headers=headers)
    posted = await glimpse.upload(headers)
    post = await glimpse.client.get(f"/api/v1/posts/{posted.json()['id']}", headers=headers)
    token = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": "correct horse"}
    )
    with_cookie = await glimpse.client.get("/api/v1/me", headers={"Cookie": "session=x"})
    for response in (me, posted, post, token, with_cookie):
        assert response.headers.get("cache-control") == "no-store", response.request.url


async def test_a_route_that_sets_its_own_cache_control_keeps_it(glimpse: Glimpse) -> None:
    async def cached() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"Cache-Control": "public, max-age=60"})

    _app(glimpse).add_api_route("/api/v1/test-cached", cached)
    response = await glimpse.client.get("/api/v1/test-cached", headers={"Authorization": "x"})
    assert response.headers["cache-control"] == "public, max-age=60"


async def test_no_server_banner_is_sent(glimpse: Glimpse) -> None:
    async def bannered() -> JSONResponse:
        return JSONResponse({"ok": True}, headers={"Server": "uvicorn"})

    _app(glimpse).add_api_route("/api/test-bannered", bannered)
    response = await glimpse.client.get("/api/test-bannered")
    assert response.status_code == 200
    assert "server" not in response.headers


async def test_an_unexpected_error_is_500_with_connection_close(glimpse: Glimpse) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug")

    _app(glimpse).add_api_route("/api/test-broken", broken)
    async with _client(glimpse, raise_app_exceptions=False) as client:
        response = await client.get("/api/test-broken")
    assert_error(response, 500, "internal_error")
    # The server drops the connection after a 500: the client must not reuse it.
    assert response.headers["connection"] == "close"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "a bug" not in response.text


# --- /docs ------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_inline_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.urls += [v for k, v in attrs if k in ("src", "href") and v]
        self._in_inline_script = tag == "script" and "src" not in values

    def handle_data(self, data: str) -> None:
        if self._in_inline_script and data.strip():
            self.inline_scripts.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_inline_script = False


async def test_docs_load_nothing_from_another_origin_under_a_strict_csp(glimpse: Glimpse) -> None:
    page = await glimpse.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    links = _Links()
    links.feed(page.text)
    assert links.urls, page.text
    assert not [u for u in links.urls if re.match(r"^(https?:)?//", u)], links.urls
    assert links.inline_scripts == []
    csp = {d.split()[0]: d.split()[1:] for d in page.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    # Every file the page names is served, from the package.
    for url in links.urls:
        response = await glimpse.client.get(f"/{url}")
        assert response.status_code == 200, url
        assert len(response.content) > 0
        if url.endswith(".js"):
            assert "javascript" in response.headers["content-type"]
    init = await glimpse.client.get("/docs/static/swagger-init.js")
    assert "SwaggerUIBundle" in init.text and "http" not in init.text


async def test_docs_serve_only_their_own_files(glimpse: Glimpse) -> None:
    for path in ("/docs/static/index.html", "/docs/static/..%2f..%2fconfig.py"):
        assert_error(await glimpse.client.get(path), 404)
    assert (await glimpse.client.get("/redoc")).status_code == 404  # (a profile, of no one)


# --- /metrics ---------------------------------------------------------------------------------


async def test_metrics_without_a_token_answer_only_this_machine(glimpse: Glimpse) -> None:
    assert (await glimpse.client.get("/metrics")).status_code == 200  # 127.0.0.1
    async with _client(glimpse, client=("::1", 5000)) as client:
        assert (await client.get("/metrics")).status_code == 200
    async with _client(glimpse, client=("203.0.113.9", 5000)) as client:
        assert_error(await client.get("/metrics"), 404)
    # Through a reverse proxy on this machine, the client is elsewhere.
    forwarded = await glimpse.client.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert_error(forwarded, 404)


@pytest.mark.parametrize("settings", [{"metrics_token": "s3cret-metrics"}], indirect=True)
async def test_metrics_with_a_token_need_it_from_everyone(glimpse: Glimpse) -> None:
    assert_error(await glimpse.client.get("/metrics"), 401)  # even from this machine
    wrong = await glimpse.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert_error(wrong, 401)
    async with _client(glimpse, client=("203.0.113.9", 5000)) as client:
        right = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-metrics"})
    assert right.status_code == 200
    assert "glimpse_http_requests_total" in right.text


# an IPv4-mapped loopback peer (a dual-stack socket) is this machine.
def test_ipv4_mapped_loopback_is_loopback() -> None:
    from glimpse.ops.metrics import _is_loopback

    assert _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("::ffff:192.0.2.1")


async def test_a_stray_slash_is_404_never_a_redirect_to_the_host_header(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    response = await glimpse.client.get(
        "/api/v1/me/", headers={**headers, "Host": "evil.example"}, follow_redirects=False
    )
    assert_error(response, 404)
    assert "location" not in response.headers
