"""Accounts, bearer tokens and profiles through the real app (API.md, "Accounts and auth")."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from tests.conftest import Glimpse, assert_error, jpeg_bytes

USER_FIELDS = {
    "id",
    "username",
    "display_name",
    "bio",
    "is_private",
    "post_count",
    "follower_count",
    "following_count",
    "follow_status",
}


async def create(glimpse: Glimpse, **body: Any) -> httpx.Response:
    return await glimpse.client.post("/api/v1/accounts", json=body)


async def token_for(glimpse: Glimpse, username: str, password: str) -> httpx.Response:
    return await glimpse.client.post(
        "/api/v1/auth/token", json={"username": username, "password": password}
    )


# --- sign-up ---------------------------------------------------------------------------------


async def test_create_account_returns_201_with_every_user_field(glimpse: Glimpse) -> None:
    response = await create(
        glimpse, username="alice_1.x", password="correct horse", display_name="Alice"
    )
    assert response.status_code == 201, response.text
    user = response.json()
    assert set(user) >= USER_FIELDS
    assert isinstance(user["id"], str) and user["id"].isdigit()
    assert int(user["id"]) < 2**63
    assert user["username"] == "alice_1.x"
    assert user["display_name"] == "Alice"
    assert user["bio"] == ""
    assert user["is_private"] is False
    assert (user["post_count"], user["follower_count"], user["following_count"]) == (0, 0, 0)
    assert user["follow_status"] == "self"
    assert "password" not in response.text and "password_hash" not in user


async def test_duplicate_username_is_409_username_taken(glimpse: Glimpse) -> None:
    await glimpse.signup("alice")
    response = await create(glimpse, username="alice", password="another password")
    assert_error(response, 409, "username_taken")


async def test_invalid_usernames_are_422_and_create_nothing(glimpse: Glimpse) -> None:
    # uppercase, too long, space, empty, dash, punctuation, non-ASCII, newline after a valid name
    for username in [
        "Alice",
        "a" * 31,
        "al ice",
        "",
        "al-ice",
        "alice!",
        "ålice",
        "alice\n",
        ".",
        "..",
    ]:
        response = await create(glimpse, username=username, password="correct horse")
        assert_error(response, 422)
    async with glimpse.container.db.read() as s:
        assert (await s.execute(text("select count(*) from users"))).scalar_one() == 0
    response = await create(glimpse, username="a" * 30, password="correct horse")
    assert response.status_code == 201, response.text


async def test_password_must_be_8_to_256_chars(glimpse: Glimpse) -> None:
    for password in ["x" * 7, "x" * 257]:
        assert_error(await create(glimpse, username="alice", password=password), 422)
    for username, password in [("short", "x" * 8), ("long", "x" * 256)]:
        response = await create(glimpse, username=username, password=password)
        assert response.status_code == 201, response.text
        assert (await token_for(glimpse, username, password)).status_code == 200


async def test_malformed_json_is_400(glimpse: Glimpse) -> None:
    response = await glimpse.client.post(
        "/api/v1/accounts",
        content=b'{"username": "alice", "password": ',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400)


async def test_wrong_types_missing_and_unknown_fields_are_422(glimpse: Glimpse) -> None:
    bodies: list[Any] = [
        {"username": 5, "password": "correct horse"},
        {"username": "alice", "password": None},
        {"username": "alice", "password": "correct horse", "is_private": "yes"},
        {"username": "alice", "password": "correct horse", "display_name": 7},
        {"username": ["alice"], "password": "correct horse"},
        {"password": "correct horse"},
        {"username": "alice", "password": "correct horse", "is_admin": True},
        ["alice", "correct horse"],
        None,
    ]
    for body in bodies:
        response = await glimpse.client.post("/api/v1/accounts", json=body)
        error = assert_error(response, 422)
        assert error["code"] != "internal_error", body
    async with glimpse.container.db.read() as s:
        assert (await s.execute(text("select count(*) from users"))).scalar_one() == 0


# --- tokens ----------------------------------------------------------------------------------


async def test_token_issue_returns_bearer_token(glimpse: Glimpse) -> None:
    await create(glimpse, username="alice", password="correct horse")
    response = await token_for(glimpse, "alice", "correct horse")
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["access_token"], str) and len(body["access_token"]) >= 32
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == glimpse.container.settings.token_ttl_seconds
    me = await glimpse.client.get(
        "/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status_code == 200 and me.json()["username"] == "alice"


async def test_wrong_password_and_unknown_user_are_both_401(glimpse: Glimpse) -> None:
    await create(glimpse, username="alice", password="correct horse")
    wrong_password = await token_for(glimpse, "alice", "wrong horse")
    unknown_user = await token_for(glimpse, "nobody", "correct horse")
    a = assert_error(wrong_password, 401)
    b = assert_error(unknown_user, 401)
    # The two answers must not tell an attacker which usernames exist.
    assert a == b
    for impossible in ("alice\x00", "ALICE", "al ice", "x" * 31):
        assert assert_error(await token_for(glimpse, impossible, "correct horse"), 401) == a


async def test_a_username_no_account_can_have_is_404(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    for path in ("/api/v1/users/alice%00", "/api/v1/users/Alice", "/api/v1/users/alice%00/posts"):
        assert_error(await glimpse.client.get(path, headers=headers), 404)


async def test_token_request_with_wrong_types_is_422_and_bad_json_400(glimpse: Glimpse) -> None:
    for body in [{"username": "alice", "password": 12345678}, {"username": "alice"}]:
        response = await glimpse.client.post("/api/v1/auth/token", json=body)
        assert_error(response, 422)
    response = await glimpse.client.post(
        "/api/v1/auth/token", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400)


async def test_delete_token_revokes_it(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    other = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": "correct horse"}
    )
    other_headers = {"Authorization": f"Bearer {other.json()['access_token']}"}
    response = await glimpse.client.delete("/api/v1/auth/token", headers=headers)
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)
    assert_error(await glimpse.client.delete("/api/v1/auth/token", headers=headers), 401)
    # Only the token used is revoked, not the account's other sessions.
    assert (await glimpse.client.get("/api/v1/me", headers=other_headers)).status_code == 200


@pytest.mark.parametrize("settings", [{"token_ttl_seconds": -1}], indirect=True)
async def test_token_issued_already_expired_is_refused(glimpse: Glimpse) -> None:
    await create(glimpse, username="alice", password="correct horse")
    response = await token_for(glimpse, "alice", "correct horse")
    assert response.status_code == 200
    headers = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)


async def test_tokens_are_stored_only_as_their_hash(glimpse: Glimpse) -> None:
    # A copy of the database (a backup, a stolen disk) must not let anyone sign in as anyone.
    await create(glimpse, username="alice", password="correct horse")
    tokens = []
    for _ in range(2):
        response = await token_for(glimpse, "alice", "correct horse")
        tokens.append(response.json()["access_token"])
    async with glimpse.container.db.read() as session:
        rows = (await session.execute(text("SELECT * FROM access_tokens"))).all()
    assert len(rows) == len(tokens)
    stored = [str(value) for row in rows for value in row]
    for token in tokens:
        assert not any(token in value for value in stored), "a token is stored as it is"
        assert hashlib.sha256(token.encode()).hexdigest() in stored
    database = glimpse.container.settings.data_dir / "glimpse.db"
    on_disk = b"".join(
        p.read_bytes() for p in (database, database.with_name("glimpse.db-wal")) if p.exists()
    )
    for token in tokens:
        assert token.encode() not in on_disk


async def test_expired_token_is_401(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    assert (await glimpse.client.get("/api/v1/me", headers=headers)).status_code == 200
    async with glimpse.container.db.write() as s:
        await s.execute(
            text("update access_tokens set expires_at = :t"),
            {"t": datetime.now(UTC) - timedelta(seconds=1)},
        )
    assert_error(await glimpse.client.get("/api/v1/me", headers=headers), 401)


async def test_missing_or_garbage_authorization_is_401(glimpse: Glimpse) -> None:
    valid = (await glimpse.signup("alice"))["Authorization"]
    token = valid.removeprefix("Bearer ")
    authorizations: list[str | bytes | None] = [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Bearer garbage",
        "Bearer glp_" + "A" * 43,
        "Basic YWxpY2U6Y29ycmVjdCBob3JzZQ==",
        "Bearer \u00e9\u00e9".encode(),
        b"Bearer \xff\xfe",
        "Token " + token,
        "Bearer " + token[:-1],
        "Bearer " + token + "x",
    ]
    for authorization in authorizations:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await glimpse.client.get("/api/v1/me", headers=headers)
        assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer"), authorization
    revoked = {"Authorization": valid}
    assert (await glimpse.client.delete("/api/v1/auth/token", headers=revoked)).status_code == 204
    response = await glimpse.client.get("/api/v1/me", headers=revoked)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# --- /me -------------------------------------------------------------------------------------


async def test_me_shows_usage_and_null_quota_when_unlimited(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    response = await glimpse.client.get("/api/v1/me", headers=headers)
    assert response.status_code == 200, response.text
    me = response.json()
    assert set(me) >= USER_FIELDS
    assert me["username"] == "alice"
    assert me["follow_status"] == "self"
    assert me["usage"] == {"uploads_today": 0, "bytes_today": 0, "bytes_stored": 0}
    assert me["quota"] == {"uploads_per_day": None, "bytes_per_day": None, "bytes_stored": None}


@pytest.mark.parametrize(
    "settings",
    [
        {
            "quota_uploads_per_day": 10,
            "quota_bytes_per_day": 5_000_000,
            "quota_bytes_stored": 9_000_000,
        }
    ],
    indirect=True,
)
async def test_me_shows_quota_numbers_and_counts_usage_after_an_upload(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["quota"] == {
        "uploads_per_day": 10,
        "bytes_per_day": 5_000_000,
        "bytes_stored": 9_000_000,
    }
    assert me["usage"] == {"uploads_today": 0, "bytes_today": 0, "bytes_stored": 0}
    photo = jpeg_bytes((400, 300))
    response = await glimpse.upload(headers, files=[("a.jpg", photo)])
    assert response.status_code == 202, response.text
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["usage"]["uploads_today"] == 1
    assert me["usage"]["bytes_today"] == len(photo)
    assert me["usage"]["bytes_stored"] >= len(photo)


@pytest.mark.parametrize("settings", [{"quota_uploads_per_day": 1}], indirect=True)
async def test_upload_over_daily_quota_is_429_with_retry_after(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    assert (await glimpse.upload(headers)).status_code == 202
    response = await glimpse.upload(headers)
    assert_error(response, 429)
    assert int(response.headers["Retry-After"]) > 0


PHOTO = jpeg_bytes((400, 300))


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        # Room for one photo and a half: the second photo passes the quota.
        ({"quota_bytes_per_day": len(PHOTO) * 3 // 2}, "quota_bytes"),
        ({"quota_bytes_stored": len(PHOTO) * 3 // 2}, "quota_storage"),
    ],
    indirect=["settings"],
)
async def test_upload_over_a_byte_quota_is_429_with_retry_after(
    glimpse: Glimpse, code: str
) -> None:
    headers = await glimpse.signup("alice")
    assert (await glimpse.upload(headers, files=[("a.jpg", PHOTO)])).status_code == 202
    response = await glimpse.upload(headers, files=[("b.jpg", PHOTO)])
    assert_error(response, 429, code)
    assert int(response.headers["Retry-After"]) > 0
    # Refused whole: nothing of it was stored or counted.
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert me["usage"]["uploads_today"] == 1
    assert me["usage"]["bytes_today"] == len(PHOTO)


async def test_patch_me_changes_display_name_bio_and_privacy(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    response = await glimpse.client.patch(
        "/api/v1/me",
        headers=headers,
        json={"display_name": "Alice A.", "bio": "photos of cats", "is_private": True},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["display_name"], body["bio"], body["is_private"]) == (
        "Alice A.",
        "photos of cats",
        True,
    )
    again = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert (again["display_name"], again["bio"], again["is_private"]) == (
        "Alice A.",
        "photos of cats",
        True,
    )
    # A partial update leaves the other fields alone.
    response = await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": False})
    assert response.status_code == 200
    body = response.json()
    assert (body["display_name"], body["bio"], body["is_private"]) == (
        "Alice A.",
        "photos of cats",
        False,
    )


async def test_a_bio_may_span_lines_and_names_may_be_any_script(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    body = {"display_name": "Алиса 🐈", "bio": "cats\r\nand\tdogs"}
    response = await glimpse.client.patch("/api/v1/me", headers=headers, json=body)
    assert response.status_code == 200, response.text
    assert (response.json()["display_name"], response.json()["bio"]) == (
        body["display_name"],
        body["bio"],
    )


async def test_patch_me_with_invalid_body_is_422_and_changes_nothing(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    bodies: list[dict[str, Any]] = [
        {"is_private": "yes"},
        {"bio": 5},
        {"username": "mallory"},
        {"display_name": "x" * 65},
        {"bio": "x" * 501},
        {"display_name": "two\nlines"},
        {"display_name": "nul\x00"},
        {"display_name": "line\u2028separator"},
        {"bio": "bell\x07"},
        {"bio": "csi\u009b31m"},
    ]
    for body in bodies:
        response = await glimpse.client.patch("/api/v1/me", headers=headers, json=body)
        assert_error(response, 422)
    me = (await glimpse.client.get("/api/v1/me", headers=headers)).json()
    assert (me["username"], me["display_name"], me["bio"], me["is_private"]) == (
        "alice",
        "alice",
        "",
        False,
    )
    assert_error(await glimpse.client.patch("/api/v1/me", json={"bio": "x"}), 401)


# --- profiles --------------------------------------------------------------------------------


async def test_get_user_shows_self_for_oneself_and_none_for_another(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    await glimpse.signup("bob")
    own = await glimpse.client.get("/api/v1/users/alice", headers=alice)
    assert own.status_code == 200, own.text
    assert set(own.json()) >= USER_FIELDS
    assert own.json()["follow_status"] == "self"
    other = await glimpse.client.get("/api/v1/users/bob", headers=alice)
    assert other.status_code == 200, other.text
    assert other.json()["username"] == "bob"
    assert other.json()["follow_status"] == "none"
    assert "usage" not in other.json() and "quota" not in other.json()


async def test_get_unknown_user_is_404_and_any_user_needs_a_token(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    assert_error(await glimpse.client.get("/api/v1/users/nobody", headers=headers), 404)
    assert_error(await glimpse.client.get("/api/v1/users/alice"), 401)
