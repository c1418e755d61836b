"""Every failure answers API.md's error body, and odd requests never reach a 500 (API.md, "Errors")."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from sqlalchemy import text

from tests.conftest import Glimpse, assert_error


async def test_unknown_routes_are_404_with_the_error_body(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    for path in [
        "/api/v1/nope",
        "/api/v2/me",
        "/api/v1/posts/1/nope",
        "/api/v1/users/alice/nope",
        "/api/v1/",
    ]:
        for auth in ({}, headers):
            assert_error(await glimpse.client.get(path, headers=auth), 404)
    # Outside /api/ a path of one segment is a profile of the web app: an unknown one is a 404
    # page, to anyone.
    for path in ["/nope", "/" + "x" * 5000, "/a/b/c"]:
        for auth in ({}, headers):
            response = await glimpse.client.get(path, headers=auth)
            assert response.status_code == 404, path
            assert response.headers["content-type"].startswith("text/html"), path
    response = await glimpse.client.head("/api/v1/nope")
    assert response.status_code == 404


async def test_wrong_method_is_405_with_the_error_body(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    media = "/media/v/ab/" + "ab" + "0" * 62 + ".jpg"
    for method, path, allowed in [
        ("PUT", "/api/v1/me", "DELETE, GET, HEAD, PATCH"),
        ("POST", "/api/v1/me", "DELETE, GET, HEAD, PATCH"),
        ("DELETE", "/api/v1/filters", "GET, HEAD"),
        ("GET", "/api/v1/auth/token", "DELETE, POST"),
        ("PATCH", "/api/v1/accounts", "POST"),
        ("PUT", "/api/v1/posts/1", "DELETE, GET, HEAD"),
        ("POST", media, "GET, HEAD"),
        ("DELETE", media, "GET, HEAD"),
    ]:
        response = await glimpse.client.request(method, path, headers=headers)
        assert_error(response, 405, "method_not_allowed")
        # Every method the path takes, not just those of the first route that matched it.
        assert response.headers["allow"] == allowed, (method, path)


async def test_every_route_that_answers_get_answers_head(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    for path, auth in [
        ("/healthz", {}),
        ("/readyz", {}),
        ("/api/v1/filters", headers),
        ("/api/v1/me", headers),
        ("/api/v1/users/alice", headers),
        ("/api/v1/users/alice/posts", headers),
    ]:
        got = await glimpse.client.get(path, headers=auth)
        head = await glimpse.client.head(path, headers=auth)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"", path
        assert head.headers["content-type"] == got.headers["content-type"], path
        if path != "/readyz":  # (its body is built anew each time)
            assert int(head.headers["content-length"]) == len(got.content), path
    unauthenticated = await glimpse.client.head("/api/v1/me")
    assert (unauthenticated.status_code, unauthenticated.content) == (401, b"")


async def test_validation_errors_are_422_with_details(glimpse: Glimpse) -> None:
    response = await glimpse.client.post("/api/v1/accounts", json={"username": "Alice"})
    error = assert_error(response, 422)
    assert isinstance(error.get("details"), list) and error["details"]
    assert all(isinstance(d, dict) for d in error["details"])


async def test_account_creation_with_a_non_json_body_is_a_client_error(glimpse: Glimpse) -> None:
    for content_type, body in [
        ("text/plain", b'{"username": "alice", "password": "correct horse"}'),
        ("application/x-www-form-urlencoded", b"username=alice&password=correct+horse"),
        ("application/json", b"\xff\xfe\x00garbage"),
        ("application/json", b""),
        ("application/json", b'{"username": "alice", "password": "correct horse"' + b" " * 10),
        ("application/json", b"[" * 10_000),
    ]:
        response = await glimpse.client.post(
            "/api/v1/accounts", content=body, headers={"Content-Type": content_type}
        )
        assert response.status_code in (400, 415, 422), (content_type, body[:40], response.text)
        assert_error(response, response.status_code)


async def test_odd_requests_anywhere_never_get_a_server_error(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    requests: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/api/v1/users/" + "a" * 5000, {}),
        ("GET", "/api/v1/users/%00", {}),
        ("GET", "/api/v1/users/%F0%9F%98%80", {}),
        ("GET", "/api/v1/users/..%2F..%2Fetc", {}),
        ("GET", "/api/v1/users/alice/posts?limit=&cursor=", {}),
        ("GET", "/api/v1/users/alice/posts?limit=1&limit=2", {}),
        ("GET", "/api/v1/users/alice/posts?cursor=%00%01%02", {}),
        ("PATCH", "/api/v1/me", {"json": {"display_name": "\x00"}}),
        ("PATCH", "/api/v1/me", {"json": {"bio": None, "display_name": None}}),
        ("PATCH", "/api/v1/me", {"json": []}),
        ("PATCH", "/api/v1/me", {"json": "alice"}),
        ("POST", "/api/v1/auth/token", {"json": {"username": "a" * 100, "password": "x"}}),
        ("POST", "/api/v1/auth/token", {"json": {"username": "\x00", "password": "\x00"}}),
        ("POST", "/api/v1/accounts", {"json": {"username": "a", "password": "\x00" * 8}}),
        ("GET", "/api/v1/posts/1", {"headers": {"Range": "bytes=0-1"}}),
        ("GET", "/media/v", {}),
        ("GET", "/media/", {}),
        ("GET", "/media/v/ab/" + "ab" + "0" * 62 + ".jpg?x=" + "y" * 3000, {}),
    ]
    for method, path, kwargs in requests:
        extra_headers = kwargs.pop("headers", {})
        response = await glimpse.client.request(
            method, path, headers={**headers, **extra_headers}, **kwargs
        )
        assert 200 <= response.status_code < 500, (method, path, response.status_code)
        if response.status_code >= 400:
            assert_error(response, response.status_code)
    # The account whose name was mangled above is intact.
    me = await glimpse.client.get("/api/v1/me", headers=headers)
    assert me.status_code == 200


async def test_openapi_and_docs_are_served(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/v1/accounts", "/api/v1/posts", "/api/v1/posts/{post_id}", "/media/{key}"):
        assert path in paths, path
    assert (await glimpse.client.get("/docs")).status_code == 200


@pytest.mark.embedded  # (SQLite's write lock, held by another connection to its file)
@pytest.mark.parametrize("settings", [{"database_busy_timeout_ms": 100}], indirect=True)
async def test_a_database_held_by_another_writer_answers_503_not_500(glimpse: Glimpse) -> None:
    database = glimpse.container.settings.data_dir / "glimpse.db"
    other = sqlite3.connect(database, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        response = await glimpse.client.post(
            "/api/v1/accounts", json={"username": "late", "password": "long enough"}
        )
        assert_error(response, 503, "unavailable")
        assert response.headers["retry-after"] == "1"
    finally:
        other.execute("ROLLBACK")
        other.close()
    # Nothing was half-written: the same request now succeeds.
    response = await glimpse.client.post(
        "/api/v1/accounts", json={"username": "late", "password": "long enough"}
    )
    assert response.status_code == 201


# SQLite's "no such table" is an OperationalError, which the busy-database handler must tell
# apart; PostgreSQL's is a ProgrammingError that only the catch-all handler sees.
@pytest.mark.embedded
async def test_a_broken_database_is_a_logged_500_not_a_retry_invitation(
    glimpse: Glimpse,
) -> None:
    # Only a busy database means "try again"; a missing table never heals by retrying.
    async with glimpse.container.db.write() as session:
        await session.execute(text("DROP TABLE upload_usage"))
    headers = await glimpse.signup("alice")
    glimpse.client.event_hooks["response"] = []  # this one 500 is the point of the test
    response = await glimpse.upload(headers)
    assert_error(response, 500, "internal_error")
    assert "retry-after" not in response.headers
    assert "Traceback" not in response.text and "upload_usage" not in response.text


async def test_a_process_whose_id_node_lease_ran_out_answers_503_until_renewed(
    glimpse: Glimpse,
) -> None:
    glimpse.container.ids.hold_until(0)  # as if the process had been suspended for an hour
    response = await glimpse.client.post(
        "/api/v1/accounts", json={"username": "late", "password": "long enough"}
    )
    assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "5"
    glimpse.container.ids.hold_until(None)  # renewed
    response = await glimpse.client.post(
        "/api/v1/accounts", json={"username": "late", "password": "long enough"}
    )
    assert response.status_code == 201
