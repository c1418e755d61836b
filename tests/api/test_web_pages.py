"""The web app's pages and its session through the real app (no browser: tests/e2e/test_web.py
has one): the session cookie and CSRF tokens, the forms, escaping, the headers every page
sends, throttling, and what signed-out visitors and strangers get."""

from __future__ import annotations

import re
from html import unescape

import httpx
import pytest

from glimpse.accounts.sessions import PRESESSION_COOKIE, SESSION_COOKIE
from glimpse.errors import Unavailable
from tests.clips import Clip
from tests.conftest import Glimpse, assert_error

PASSWORD = "correct horse"


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def form_token(client: httpx.AsyncClient, path: str) -> str:
    response = await client.get(path)
    assert response.status_code == 200
    return csrf_of(response.text)


async def web_sign_up(client: httpx.AsyncClient, username: str) -> str:
    """Sign up through the form; the client keeps the session cookie. Returns the page's
    CSRF token for the session."""
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup", data={"csrf_token": token, "username": username, "password": PASSWORD}
    )
    assert response.status_code == 303 and response.headers["location"] == "/", response.text
    return csrf_of((await client.get("/")).text)


def fresh_client(glimpse: Glimpse) -> httpx.AsyncClient:
    """Another browser: its own cookies."""
    return httpx.AsyncClient(transport=glimpse.client._transport, base_url="http://glimpse.test")


async def test_signing_up_signs_in_with_an_httponly_samesite_cookie(glimpse: Glimpse) -> None:
    client = glimpse.client
    page = await client.get("/")
    assert page.status_code == 200
    assert 'href="/signup"' in page.text and 'href="/signin"' in page.text
    token = await form_token(client, "/signup")
    response = await client.post(
        "/signup", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 303
    cookie = next(
        v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE in v
    )
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    home = await client.get("/")
    assert 'href="/new">New post</a>' in home.text and "Sign out" in home.text
    me = await client.get("/api/v1/me")  # the cookie authenticates API reads
    assert me.status_code == 200 and me.json()["username"] == "alice"


async def test_a_cookie_request_that_changes_state_needs_the_csrf_header(
    glimpse: Glimpse,
) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    post = (await glimpse.upload(await glimpse.signup("bob"))).json()
    await glimpse.run_jobs()
    like = f"/api/v1/posts/{post['id']}/like"
    assert_error(await glimpse.client.post(like), 403, "csrf_failed")
    # A token one character off (never the same one: tokens may start with "x").
    forged = ("y" if csrf[0] == "x" else "x") + csrf[1:]
    assert_error(
        await glimpse.client.post(like, headers={"X-CSRF-Token": forged}),
        403,
        "csrf_failed",
    )
    # Another session's token is no good for this one.
    async with fresh_client(glimpse) as other:
        other_csrf = await web_sign_up(other, "carol")
    assert_error(
        await glimpse.client.post(like, headers={"X-CSRF-Token": other_csrf}), 403, "csrf_failed"
    )
    assert (await glimpse.client.post(like, headers={"X-CSRF-Token": csrf})).status_code == 204
    # Reads need none; a bearer request needs none (a cookie beside it changes nothing).
    assert (await glimpse.client.get(f"/api/v1/posts/{post['id']}")).status_code == 200
    bearer = await glimpse.signup("dave")
    assert (await glimpse.client.post(like, headers=bearer)).status_code == 204
    got = await glimpse.client.get(f"/api/v1/posts/{post['id']}")
    assert got.json()["like_count"] == 2
    # Revoking the session's token by cookie needs the header too.
    assert_error(await glimpse.client.delete("/api/v1/auth/token"), 403, "csrf_failed")
    assert (await glimpse.client.get("/api/v1/me")).status_code == 200


async def test_forms_need_the_token_of_their_own_browser(glimpse: Glimpse) -> None:
    client = glimpse.client
    # No token, no pre-session cookie, or another browser's token: refused, nothing created.
    response = await client.post("/signup", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 403 and "expired" in response.text
    async with fresh_client(glimpse) as other:
        foreign = await form_token(other, "/signup")
    await client.get("/signup")
    response = await client.post(
        "/signup", data={"csrf_token": foreign, "username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert_error(
        await glimpse.client.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        ),
        401,
    )
    # Signed in, the session's forms need the session's token.
    csrf = await web_sign_up(client, "alice")
    assert (await client.post("/signout", data={})).status_code == 403
    assert (await client.post("/settings/profile", data={"bio": "hacked"})).status_code == 403
    assert (await client.get("/api/v1/me")).json()["bio"] == ""
    response = await client.post("/signout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert_error(await client.get("/api/v1/me"), 401)


async def test_sign_out_revokes_the_sessions_token(glimpse: Glimpse) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    session = glimpse.client.cookies[SESSION_COOKIE]
    await glimpse.client.post("/signout", data={"csrf_token": csrf})
    async with fresh_client(glimpse) as thief:
        thief.cookies.set(SESSION_COOKIE, session)
        assert_error(await thief.get("/api/v1/me"), 401)
        assert (await thief.get("/")).text.count('href="/signin"') >= 1


async def test_sign_in_form_verifies_a_password_whatever_the_username(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    await glimpse.signup("alice", PASSWORD)
    verified: list[str | None] = []
    passwords = glimpse.container.passwords
    real = passwords.verify

    async def counting(password_hash: str | None, password: str) -> bool:
        verified.append(password_hash)
        return await real(password_hash, password)

    monkeypatch.setattr(passwords, "verify", counting)
    for username in ("alice", "nobody", "NOT A NAME"):
        token = await form_token(glimpse.client, "/signin")
        response = await glimpse.client.post(
            "/signin", data={"csrf_token": token, "username": username, "password": "wrong one"}
        )
        assert response.status_code == 401
        assert "Wrong username or password." in response.text
    # One argon2 verify each: against alice's hash, then twice against the dummy.
    assert len(verified) == 3 and verified[0] is not None and verified[1:] == [None, None]
    token = await form_token(glimpse.client, "/signin")
    response = await glimpse.client.post(
        "/signin", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 303
    assert PRESESSION_COOKIE not in glimpse.client.cookies  # spent
    assert (await glimpse.client.get("/api/v1/me")).status_code == 200


@pytest.mark.parametrize(
    "settings",
    [{"rate_limits": "api=1000/minute;signup=1000/minute;signin_failures=3/minute"}],
    indirect=True,
)
async def test_sign_in_form_is_throttled_like_the_api(glimpse: Glimpse) -> None:
    await glimpse.signup("alice", PASSWORD)
    statuses = []
    for _ in range(5):
        token = await form_token(glimpse.client, "/signin")
        response = await glimpse.client.post(
            "/signin", data={"csrf_token": token, "username": "alice", "password": "wrong one"}
        )
        statuses.append(response.status_code)
    assert statuses[:3] == [401, 401, 401] and set(statuses[3:]) == {429}
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "settings", [{"rate_limits": "api=4/minute;signup=1000/minute"}], indirect=True
)
async def test_pages_count_against_the_same_budget_as_the_api(glimpse: Glimpse) -> None:
    responses = [await glimpse.client.get("/signin") for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 429]
    assert int(responses[-1].headers["Retry-After"]) >= 1
    # Static files and health probes are not counted.
    assert (await glimpse.client.get("/healthz")).status_code == 200
    assert (await glimpse.client.get("/static/app.css")).status_code == 200


async def test_sign_up_form_refuses_bad_names_and_taken_ones(glimpse: Glimpse) -> None:
    client = glimpse.client
    for username, password, status in (
        ("Alice", PASSWORD, 422),
        ("alice", "short", 422),
        ("signin", PASSWORD, 422),  # a page's name
        ("alice", PASSWORD, 303),
    ):
        token = await form_token(client, "/signup")
        response = await client.post(
            "/signup", data={"csrf_token": token, "username": username, "password": password}
        )
        assert response.status_code == status, (username, response.text)
    async with fresh_client(glimpse) as other:
        token = await form_token(other, "/signup")
        response = await other.post(
            "/signup", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
        )
        assert response.status_code == 409 and "That username is taken." in response.text
    # The API refuses the reserved names too.
    assert_error(
        await client.post("/api/v1/accounts", json={"username": "new", "password": PASSWORD}),
        422,
    )


async def test_every_page_escapes_user_text_and_sends_its_policy(glimpse: Glimpse) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    csrf = await web_sign_up(glimpse.client, "alice")
    response = await glimpse.client.post(
        "/settings/profile",
        data={"csrf_token": csrf, "display_name": evil[:60], "bio": evil},
    )
    assert response.status_code == 303 and response.headers["location"] == "/alice"
    headers = {"X-CSRF-Token": csrf}
    created = await glimpse.client.post(
        "/api/v1/posts",
        headers=headers,
        files=[("file", ("a.jpg", _jpeg(), "image/jpeg"))],
        data={"caption": evil, "alt_text": evil},
    )
    assert created.status_code == 202
    await glimpse.run_jobs()
    post_id = created.json()["id"]
    await glimpse.client.post(
        f"/api/v1/posts/{post_id}/comments", headers=headers, json={"text": evil}
    )
    for path in ("/", "/alice", f"/p/{post_id}", "/settings/profile", "/requests", "/new"):
        page = await glimpse.client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text and "<img src=x" not in page.text, path
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["x-content-type-options"] == "nosniff"
    post_page = (await glimpse.client.get(f"/p/{post_id}")).text
    assert unescape(post_page).count(evil) >= 3  # caption, alt text, comment: shown as text


async def test_signed_out_visitors_are_sent_to_sign_in(glimpse: Glimpse) -> None:
    await glimpse.signup("alice")
    for path in ("/new", "/requests", "/settings/profile", "/alice", "/p/1"):
        response = await glimpse.client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/signin", path


async def test_profiles_show_what_the_api_would(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    await glimpse.client.patch("/api/v1/me", headers=alice, json={"is_private": True})
    await glimpse.upload(alice)
    await glimpse.run_jobs()
    await web_sign_up(glimpse.client, "bob")
    private = await glimpse.client.get("/alice")
    assert private.status_code == 200 and "This account is private" in private.text
    assert "/media/" not in private.text and 'data-status="none"' in private.text
    for missing in ("/nobody", "/p/12345", "/p/abc", "/p/99999999999999999999999"):
        response = await glimpse.client.get(missing)
        assert response.status_code == 404, missing
        assert response.headers["content-type"].startswith("text/html")
    await glimpse.client.post("/api/v1/users/bob/block", headers=alice)
    assert (await glimpse.client.get("/alice")).status_code == 404


async def test_the_home_page_shows_twenty_posts_and_the_apis_cursor(glimpse: Glimpse) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    for n in range(22):
        response = await glimpse.client.post(
            "/api/v1/posts",
            headers={"X-CSRF-Token": csrf},
            files=[("file", ("a.jpg", _jpeg(), "image/jpeg"))],
            data={"caption": f"post {n}"},
        )
        assert response.status_code == 202
    await glimpse.run_jobs()
    page = (await glimpse.client.get("/?order=latest")).text
    assert page.count('<article class="post"') == 20
    assert 'srcset="' in page and 'type="image/webp"' in page
    cursor = re.search(r'data-next-cursor="([^"]+)"', page)
    assert cursor
    rest = await glimpse.client.get(
        "/api/v1/feed", params={"order": "latest", "cursor": unescape(cursor.group(1))}
    )
    assert [p["caption"] for p in rest.json()["items"]] == ["post 1", "post 0"]


async def test_static_files_are_ours_and_cached_for_good(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/static/app.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "immutable" in response.headers["cache-control"]
    for name in ("nope.js", "..%2Fapp.py", "templates"):
        assert (await glimpse.client.get(f"/static/{name}")).status_code == 404
    home = (await glimpse.client.get("/")).text
    # Nothing is loaded from another origin.
    assert not re.search(r'(src|href)="(https?:)?//', home)


def _jpeg() -> bytes:
    from tests.conftest import jpeg_bytes

    return jpeg_bytes((400, 300))


async def test_a_dead_session_cookie_counts_for_nothing(glimpse: Glimpse) -> None:
    # A session whose token was revoked elsewhere (the API, an operator, a restored database):
    # the visitor is signed out, the dead cookie is removed, and signing in works.
    csrf = await web_sign_up(glimpse.client, "alice")
    revoked = await glimpse.client.delete("/api/v1/auth/token", headers={"X-CSRF-Token": csrf})
    assert revoked.status_code == 204
    page = await glimpse.client.get("/signin")
    assert page.status_code == 200
    assert SESSION_COOKIE not in glimpse.client.cookies
    assert PRESESSION_COOKIE in glimpse.client.cookies
    response = await glimpse.client.post(
        "/signin",
        data={"csrf_token": csrf_of(page.text), "username": "alice", "password": PASSWORD},
    )
    assert response.status_code == 303
    assert (await glimpse.client.get("/api/v1/me")).status_code == 200


@pytest.mark.parametrize(
    "settings", [{"rate_limits": "api=6/minute;signup=1000/minute"}], indirect=True
)
@pytest.mark.parametrize("trick", ["bearer beside the cookie", "two cookies"])
async def test_only_the_token_a_route_checked_earns_a_budget_of_its_own(
    glimpse: Glimpse, trick: str
) -> None:
    # Signed up through the API: the page requests below are the first to spend the budgets.
    await glimpse.signup("alice", PASSWORD)
    token = (
        await glimpse.client.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        )
    ).json()["access_token"]
    if trick == "bearer beside the cookie":
        # Pages read only the cookie: the made-up bearer token was never checked.
        path = "/"
        headers = {"Authorization": "Bearer made-up", "Cookie": f"{SESSION_COOKIE}={token}"}
    else:
        # The route reads the last of two same-named cookies: the first was never checked.
        path = "/api/v1/me"
        headers = {"Cookie": f"{SESSION_COOKIE}=made-up; {SESSION_COOKIE}={token}"}
    glimpse.client.cookies.clear()
    # Once used, the good token is known, and earns a budget of its own (as it should).
    warm = await glimpse.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert warm.status_code == 200
    responses = [await glimpse.client.get(path, headers=headers) for _ in range(8)]
    statuses = [r.status_code for r in responses]
    # One budget of 6 (the address's, or the good token's), never a fresh one for a made-up token.
    assert 429 in statuses and statuses.index(429) <= 6, statuses
    remaining = [int(r.headers["RateLimit-Remaining"]) for r in responses if r.status_code == 200]
    assert remaining == sorted(remaining, reverse=True) and len(set(remaining)) == len(remaining)


@pytest.mark.parametrize("settings", [{"trusted_proxy_hops": 1}], indirect=True)
async def test_cookies_are_secure_behind_a_trusted_https_proxy(glimpse: Glimpse) -> None:
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    response = await glimpse.client.get("/signin", headers=proxied)
    cookie = response.headers["set-cookie"]
    assert PRESESSION_COOKIE in cookie and "Secure" in cookie
    # Through a proxy reached over plain HTTP: no Secure (the browser would not send it back).
    response = await glimpse.client.get("/signin", headers={**proxied, "X-Forwarded-Proto": "http"})
    assert "Secure" not in response.headers["set-cookie"]


async def test_no_proxy_is_trusted_unless_configured(glimpse: Glimpse) -> None:
    response = await glimpse.client.get("/signin", headers={"X-Forwarded-Proto": "https"})
    assert "Secure" not in response.headers["set-cookie"]


async def test_pages_answer_errors_as_pages_and_the_api_as_json(glimpse: Glimpse) -> None:
    for method, path, kwargs, status in (
        ("GET", "/new/", {}, 404),
        ("POST", "/signin", {"files": {"file": ("a.txt", b"x")}}, 400),
        ("POST", "/signin", {"content": b"x" * 70_000}, 413),
        ("PUT", "/signin", {}, 405),
    ):
        response = await glimpse.client.request(method, path, **kwargs)
        assert response.status_code == status, (path, response.text)
        assert response.headers["content-type"].startswith("text/html"), path
        assert "content-security-policy" in response.headers
    assert_error(await glimpse.client.get("/api/v1/nope"), 404)
    assert_error(await glimpse.client.post("/api/v1/auth/token", content=b"x" * 70_000), 413)


async def test_sign_out_ends_the_browsers_session_even_on_a_full_disk(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")

    async def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("glimpse.web.routes.accounts.revoke_token", disk_full)
    response = await glimpse.client.post("/signout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert SESSION_COOKIE not in glimpse.client.cookies


async def test_a_profile_grid_and_follow_requests_continue_with_the_apis_cursors(
    glimpse: Glimpse,
) -> None:
    alice = await glimpse.signup("alice")
    for _ in range(20):
        assert (await glimpse.upload(alice)).status_code == 202
    await glimpse.run_jobs()
    await glimpse.client.patch("/api/v1/me", headers=alice, json={"is_private": True})
    for n in range(22):
        follower = await glimpse.signup(f"fan{n}")
        await glimpse.client.post("/api/v1/users/alice/follow", headers=follower)
    glimpse.client.cookies.clear()
    token = await form_token(glimpse.client, "/signin")
    await glimpse.client.post(
        "/signin", data={"csrf_token": token, "username": "alice", "password": PASSWORD}
    )
    grid = (await glimpse.client.get("/alice")).text
    assert grid.count('<li><a href="/p/') == 18
    cursor = re.search(r'data-next-cursor="([^"]+)" data-source="/api/v1/users/alice/posts"', grid)
    assert cursor
    rest = await glimpse.client.get(
        "/api/v1/users/alice/posts", params={"cursor": unescape(cursor.group(1))}
    )
    assert len(rest.json()["items"]) == 2 and rest.json()["next_cursor"] is None
    requests = (await glimpse.client.get("/requests")).text
    assert requests.count('<li data-username="fan') == 20
    cursor = re.search(
        r'data-next-cursor="([^"]+)" data-source="/api/v1/me/follow-requests"', requests
    )
    assert cursor
    rest = await glimpse.client.get(
        "/api/v1/me/follow-requests", params={"cursor": unescape(cursor.group(1))}
    )
    assert [u["username"] for u in rest.json()["items"]] == ["fan1", "fan0"]


async def test_a_busy_moment_signs_no_one_out(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    await web_sign_up(glimpse.client, "alice")

    async def busy(*args: object, **kwargs: object) -> object:
        raise Unavailable("The service is busy; please try again in a moment.", retry_after=1)

    monkeypatch.setattr("glimpse.web.routes.feed_page_data", busy)
    response = await glimpse.client.get("/")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert "set-cookie" not in response.headers
    assert SESSION_COOKIE in glimpse.client.cookies


# Found by mutation testing: each of these failed under a planted bug the tests above let through.


# M02: a signed-in form must be bound to the session, not to a pre-session.
async def test_signed_in_form_refuses_a_presession_token(glimpse: Glimpse) -> None:
    client = glimpse.client
    page = await client.get("/signin")
    presession = client.cookies[PRESESSION_COOKIE]
    pre_token = csrf_of(page.text)
    await web_sign_up(client, "alice")
    assert PRESESSION_COOKIE not in client.cookies
    client.cookies.set(PRESESSION_COOKIE, presession, domain="glimpse.test")  # still held
    response = await client.post("/settings/profile", data={"csrf_token": pre_token, "bio": "x"})
    assert response.status_code == 403
    assert (await client.get("/api/v1/me")).json()["bio"] == ""
    assert (await client.post("/signout", data={"csrf_token": pre_token})).status_code == 403


# M10: the sign-up form spends the per-address `signup` budget as POST /api/v1/accounts does.
@pytest.mark.parametrize(
    "settings", [{"rate_limits": "api=1000/minute;signup=2/minute"}], indirect=True
)
async def test_sign_up_form_is_throttled_per_address(glimpse: Glimpse) -> None:
    statuses = []
    for n in range(3):
        async with fresh_client(glimpse) as browser:
            token = await form_token(browser, "/signup")
            response = await browser.post(
                "/signup", data={"csrf_token": token, "username": f"u{n}", "password": PASSWORD}
            )
            statuses.append(response.status_code)
    assert statuses == [303, 303, 429]
    assert response.headers["content-type"].startswith("text/html")
    assert int(response.headers["Retry-After"]) >= 1


# M14: a good session cookie earns its own budget, like a good bearer token, so a signed-in
# browser is not throttled by what others behind the same address spend.
@pytest.mark.parametrize("settings", [{"rate_limits": "api=4/minute"}], indirect=True)
async def test_a_session_cookie_earns_a_budget_of_its_own(glimpse: Glimpse) -> None:
    await glimpse.signup("alice", PASSWORD)
    token = (
        await glimpse.client.post(
            "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
        )
    ).json()["access_token"]
    glimpse.client.cookies.clear()
    cookie = {"Cookie": f"{SESSION_COOKIE}={token}"}
    # auth/token spent one of the address's 4; the cookie's first request another, and makes
    # the token known.
    assert (await glimpse.client.get("/api/v1/me", headers=cookie)).status_code == 200
    async with fresh_client(glimpse) as stranger:
        statuses = [(await stranger.get("/api/v1/filters")).status_code for _ in range(3)]
    assert statuses[-1] == 429  # the address's budget is spent
    assert (await glimpse.client.get("/api/v1/me", headers=cookie)).status_code == 200
    assert (await glimpse.client.get("/", headers=cookie)).status_code == 200


# T2: the feed's <img> reserves its box (width and height), so the layout does not jump.
async def test_feed_images_have_width_and_height(glimpse: Glimpse) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    await glimpse.upload({"X-CSRF-Token": csrf})
    await glimpse.run_jobs()
    page = (await glimpse.client.get("/?order=latest")).text
    imgs = re.findall(r"<img [^>]*>", page)
    assert imgs
    for img in imgs:
        assert re.search(r'width="[1-9]\d*"', img) and re.search(r'height="[1-9]\d*"', img), img


async def test_a_video_plays_inline_muted_with_its_poster_and_both_mp4s(
    glimpse: Glimpse, clips: dict[str, Clip]
) -> None:
    # Browsers autoplay only muted video, and inline (not full screen) only with playsinline.
    csrf = await web_sign_up(glimpse.client, "alice")
    headers = {"X-CSRF-Token": csrf}
    post = (
        await glimpse.upload(headers, files=[("clip.mp4", clips["h264"].path.read_bytes())])
    ).json()
    await glimpse.run_jobs()
    shown = (await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=headers)).json()
    urls = {(v["name"], v["content_type"]): v["url"] for v in shown["media"][0]["variants"]}
    page = (await glimpse.client.get(f"/p/{post['id']}")).text
    [tag] = re.findall(r"<video [^>]*>", page)
    assert set(re.findall(r"\s(muted|autoplay|playsinline|loop)(?=[\s>])", tag)) == {
        "muted",
        "autoplay",
        "playsinline",
        "loop",
    }, tag
    poster = re.search(r'poster="([^"]*)"', tag)
    assert poster and unescape(poster.group(1)) == urls["poster", "image/jpeg"], tag
    sources = re.findall(r'<source type="video/mp4" src="([^"]*)">', page)
    assert [unescape(s) for s in sources] == [
        urls["mp4_720", "video/mp4"],
        urls["mp4_480", "video/mp4"],
    ]


# T3: the like button's label is "Like" until liked, "Unlike" after.
async def test_like_label_follows_liked_by_me(glimpse: Glimpse) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    post = (await glimpse.upload({"X-CSRF-Token": csrf})).json()
    await glimpse.run_jobs()
    page = (await glimpse.client.get(f"/p/{post['id']}")).text
    assert 'class="like" aria-pressed="false">Like</button>' in page
    liked = await glimpse.client.post(
        f"/api/v1/posts/{post['id']}/like", headers={"X-CSRF-Token": csrf}
    )
    assert liked.status_code == 204
    page = (await glimpse.client.get(f"/p/{post['id']}")).text
    assert 'class="like" aria-pressed="true">Unlike</button>' in page


# T4, T7: the forms posted to the server carry the page's CSRF token.
async def test_every_form_posted_here_carries_the_csrf_token(glimpse: Glimpse) -> None:
    for path in ("/signup", "/signin"):
        page = (await glimpse.client.get(path)).text
        assert f'name="csrf_token" value="{csrf_of(page)}"' in page, path
    await web_sign_up(glimpse.client, "alice")
    for path in ("/", "/settings/profile", "/settings/account", "/alice"):
        page = (await glimpse.client.get(path)).text
        forms = re.findall(r'<form method="post".*?</form>', page, re.S)
        assert forms, path
        for form in forms:
            assert f'name="csrf_token" value="{csrf_of(page)}"' in form, (path, form)


# T6: a pending request to a private account shows "Requested".
async def test_follow_button_says_requested_while_pending(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    await glimpse.client.patch("/api/v1/me", headers=alice, json={"is_private": True})
    csrf = await web_sign_up(glimpse.client, "bob")
    followed = await glimpse.client.post(
        "/api/v1/users/alice/follow", headers={"X-CSRF-Token": csrf}
    )
    assert followed.json()["status"] == "pending"
    page = (await glimpse.client.get("/alice")).text
    assert '<button type="button" class="follow" data-status="pending">Requested</button>' in page
