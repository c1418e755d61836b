"""Throttling through the real app: budgets per token and per address, exact under
concurrency, API.md's 429, RateLimit-* headers, and sign-in failures that cannot lock the
owner out. Every test runs with the counts in this process's memory (the embedded stack) and in Redis
(shared by every API process; the scale stack, tests/api/conftest.py)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.conftest import Glimpse, assert_error

ALICE = {"username": "alice", "password": "correct horse"}
GENEROUS = "api=1000/minute;upload=1000/minute;signin_failures=1000/minute;signup=1000/minute"


def budgets(setting: str, **settings: object) -> pytest.MarkDecorator:
    """Run the test with these budgets (over generous ones) and other settings."""
    return pytest.mark.parametrize(
        "settings", [{"rate_limits": f"{GENEROUS};{setting}", **settings}], indirect=True
    )


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def assert_throttled(response: httpx.Response, limit: int) -> None:
    """API.md's 429: code `throttled`, Retry-After, and the spent budget's RateLimit-*."""
    assert_error(response, 429, "throttled")
    assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert response.headers["RateLimit-Limit"] == str(limit)
    assert response.headers["RateLimit-Remaining"] == "0"
    assert int(response.headers["RateLimit-Reset"]) >= 1


def sent_from(address: str) -> dict[str, str]:
    # What a trusted proxy appends; the client's own claim comes first and is ignored.
    return {"X-Forwarded-For": f"6.6.6.6, {address}"}


@budgets("api=10/minute")
async def test_parallel_requests_with_one_token_admit_exactly_the_budget(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()  # (counted against the address, not the token)
    # A token's first request still counts against the address; once it is known good, the
    # token has a budget of its own.
    assert (await glimpse.client.get("/api/v1/me", headers=headers)).status_code == 200
    responses = await asyncio.gather(
        *(glimpse.client.get("/api/v1/me", headers=headers) for _ in range(25))
    )
    assert statuses(responses) == {200: 10, 429: 15}
    for response in responses:
        if response.status_code == 429:
            assert_throttled(response, 10)
            # Answered before any body was read: the connection is not reused.
            assert response.headers["Connection"] == "close"


@budgets("api=10/minute")
async def test_parallel_requests_without_a_token_admit_exactly_the_budget_per_address(
    glimpse: Glimpse,
) -> None:
    responses = await asyncio.gather(*(glimpse.client.get("/api/v1/filters") for _ in range(25)))
    # Counted before authentication: unauthenticated requests spend the address's budget too.
    assert statuses(responses) == {401: 10, 429: 15}


@budgets("api=5/minute")
async def test_every_counted_response_reports_its_budget(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    first = await glimpse.client.get("/api/v1/me", headers=headers)  # (the address's third)
    assert first.headers["RateLimit-Remaining"] == "2"
    remaining = []
    for _ in range(5):
        response = await glimpse.client.get("/api/v1/me", headers=headers)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "5"
        assert 1 <= int(response.headers["RateLimit-Reset"]) <= 60
        remaining.append(int(response.headers["RateLimit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    assert_throttled(await glimpse.client.get("/api/v1/me", headers=headers), 5)
    # Routes outside the API (the media origin, health) are not throttled.
    for _ in range(10):
        response = await glimpse.client.get("/healthz")
        assert response.status_code == 200 and "RateLimit-Limit" not in response.headers


@budgets("api=6/minute")
async def test_each_token_and_each_address_has_its_own_budget(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    bob = await glimpse.signup("bob")
    # Each token's first request counts against the address: 6 of 6 spent.
    assert (await glimpse.client.get("/api/v1/me", headers=alice)).status_code == 200
    assert (await glimpse.client.get("/api/v1/me", headers=bob)).status_code == 200
    assert_throttled(await glimpse.client.get("/api/v1/filters"), 6)
    for _ in range(6):
        assert (await glimpse.client.get("/api/v1/me", headers=alice)).status_code == 200
    assert_throttled(await glimpse.client.get("/api/v1/me", headers=alice), 6)
    # Alice's spent budget is hers alone.
    assert (await glimpse.client.get("/api/v1/me", headers=bob)).status_code == 200


@budgets("api=5/minute")
async def test_made_up_tokens_spend_the_address_budget(glimpse: Glimpse) -> None:
    responses = [
        await glimpse.client.get("/api/v1/me", headers={"Authorization": f"Bearer glp_fake{i}"})
        for i in range(8)
    ]
    assert [r.status_code for r in responses] == [401] * 5 + [429] * 3


@budgets("api=3/minute")
async def test_a_made_up_token_a_route_never_checked_earns_no_budget(glimpse: Glimpse) -> None:
    fake = {"Authorization": "Bearer glp_fake"}
    # Sign-up reads no token: its answer (here 422) says nothing about the token's worth.
    response = await glimpse.client.post("/api/v1/accounts", json={}, headers=fake)
    assert response.status_code == 422
    responses = [await glimpse.client.get("/api/v1/me", headers=fake) for _ in range(3)]
    assert [r.status_code for r in responses] == [401, 401, 429]


@budgets("api=3/minute", trusted_proxy_hops=1)
async def test_behind_a_trusted_proxy_the_forwarded_address_is_budgeted(glimpse: Glimpse) -> None:
    for _ in range(3):
        response = await glimpse.client.get("/api/v1/filters", headers=sent_from("1.1.1.1"))
        assert response.status_code == 401
    assert_throttled(await glimpse.client.get("/api/v1/filters", headers=sent_from("1.1.1.1")), 3)
    # Another client behind the same proxy is not held up.
    response = await glimpse.client.get("/api/v1/filters", headers=sent_from("2.2.2.2"))
    assert response.status_code == 401
    # Whatever the client itself writes left of the proxy's entry changes nothing.
    response = await glimpse.client.get(
        "/api/v1/filters", headers={"X-Forwarded-For": "7.7.7.7, 1.1.1.1"}
    )
    assert_throttled(response, 3)


@budgets("api=3/minute", trusted_proxy_hops=0)
async def test_without_a_trusted_proxy_forwarded_for_is_ignored(glimpse: Glimpse) -> None:
    for address in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
        response = await glimpse.client.get("/api/v1/filters", headers=sent_from(address))
        assert response.status_code == 401
    assert_throttled(await glimpse.client.get("/api/v1/filters", headers=sent_from("4.4.4.4")), 3)


@pytest.mark.parametrize("settings", [{"rate_limits": "off"}], indirect=True)
async def test_off_disables_throttling(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    responses = await asyncio.gather(
        *(glimpse.client.get("/api/v1/me", headers=headers) for _ in range(40))
    )
    assert statuses(responses) == {200: 40}
    assert all("RateLimit-Limit" not in r.headers for r in responses)
    for _ in range(8):
        wrong = await glimpse.client.post(
            "/api/v1/auth/token", json={**ALICE, "password": "wrong horse"}
        )
        assert wrong.status_code == 401


@budgets("upload=2/hour")
async def test_uploads_past_the_budget_are_refused_before_the_body_is_read(
    glimpse: Glimpse,
) -> None:
    headers = await glimpse.signup()
    for _ in range(2):
        response = await glimpse.upload(headers)
        assert response.status_code == 202
        assert response.headers["RateLimit-Limit"] == "2"
    stored = glimpse.stored_files()

    async def body() -> object:
        yield b"--x\r\n"  # a body that never ends: the answer must come first
        await asyncio.Event().wait()

    refused = await glimpse.client.post(
        "/api/v1/posts",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=x"},
        content=body(),
    )
    assert_throttled(refused, 2)
    assert refused.headers["Connection"] == "close"
    assert glimpse.stored_files() == stored
    # The budget is the account's: reads go on.
    assert (await glimpse.client.get("/api/v1/me", headers=headers)).status_code == 200


@budgets("signup=2/hour", trusted_proxy_hops=1)
async def test_sign_ups_past_the_budget_are_throttled_per_address(glimpse: Glimpse) -> None:
    for name in ("a1", "a2"):
        response = await glimpse.client.post(
            "/api/v1/accounts",
            json={"username": name, "password": "correct horse"},
            headers=sent_from("1.1.1.1"),
        )
        assert response.status_code == 201
    response = await glimpse.client.post(
        "/api/v1/accounts",
        json={"username": "a3", "password": "correct horse"},
        headers=sent_from("1.1.1.1"),
    )
    assert_throttled(response, 2)
    response = await glimpse.client.post(
        "/api/v1/accounts",
        json={"username": "a3", "password": "correct horse"},
        headers=sent_from("2.2.2.2"),
    )
    assert response.status_code == 201


async def sign_in(glimpse: Glimpse, address: str, password: str) -> httpx.Response:
    return await glimpse.client.post(
        "/api/v1/auth/token",
        json={"username": "alice", "password": password},
        headers=sent_from(address),
    )


@budgets("signin_failures=3/minute", trusted_proxy_hops=1)
async def test_an_attackers_failures_do_not_lock_the_owner_out(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    # The owner signs in from home once: that address is now known for this account.
    assert (await sign_in(glimpse, "10.0.0.1", ALICE["password"])).status_code == 200

    for _ in range(3):
        assert_error(await sign_in(glimpse, "6.6.6.1", "guess"), 401, "invalid_credentials")
    # The attacker's address is spent: refused without the password being looked at, even
    # when it is right.
    verifies = []
    real_verify = glimpse.container.passwords.verify

    async def counting_verify(password_hash: str | None, password: str) -> bool:
        verifies.append(password)
        return await real_verify(password_hash, password)

    monkeypatch.setattr(glimpse.container.passwords, "verify", counting_verify)
    assert_throttled(await sign_in(glimpse, "6.6.6.1", ALICE["password"]), 3)
    assert verifies == []
    # Other unknown addresses share the account's budget for strangers, also spent: a botnet
    # gets 3 guesses a minute at alice in all, not 3 per address.
    assert_throttled(await sign_in(glimpse, "6.6.6.2", "guess"), 3)
    assert verifies == []

    # The owner, from the address it signed in from before, still gets in.
    assert (await sign_in(glimpse, "10.0.0.1", ALICE["password"])).status_code == 200
    # Its own mistakes there count against it alone.
    for _ in range(3):
        assert_error(await sign_in(glimpse, "10.0.0.1", "typo"), 401)
    assert_throttled(await sign_in(glimpse, "10.0.0.1", ALICE["password"]), 3)


@budgets("signin_failures=3/minute", trusted_proxy_hops=1)
async def test_one_address_cannot_guess_at_many_accounts(glimpse: Glimpse) -> None:
    for name in ("bob", "carol", "dave"):
        response = await glimpse.client.post(
            "/api/v1/auth/token",
            json={"username": name, "password": "guess"},
            headers=sent_from("6.6.6.6"),
        )
        assert_error(response, 401)
    response = await glimpse.client.post(
        "/api/v1/auth/token",
        json={"username": "erin", "password": "guess"},
        headers=sent_from("6.6.6.6"),
    )
    assert_throttled(response, 3)


@budgets("signin_failures=3/minute")
async def test_parallel_failed_sign_ins_admit_exactly_the_budget(glimpse: Glimpse) -> None:
    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    responses = await asyncio.gather(
        *(
            glimpse.client.post("/api/v1/auth/token", json={**ALICE, "password": f"guess {i}"})
            for i in range(8)
        )
    )
    assert statuses(responses) == {401: 3, 429: 5}


@budgets("signin_failures=2/minute")
async def test_successful_sign_ins_do_not_spend_the_failure_budget(glimpse: Glimpse) -> None:
    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    for _ in range(5):
        response = await glimpse.client.post("/api/v1/auth/token", json=ALICE)
        assert response.status_code == 200


@budgets("signin_failures=3/minute", trusted_proxy_hops=1)
async def test_the_owner_gets_in_from_a_known_address_an_attacker_shares(glimpse: Glimpse) -> None:
    await glimpse.client.post("/api/v1/accounts", json=ALICE)
    assert (await sign_in(glimpse, "10.0.0.1", ALICE["password"])).status_code == 200
    # Someone behind the same NAT guesses at other accounts until the address is spent.
    for name in ("bob", "carol", "dave", "erin"):
        await glimpse.client.post(
            "/api/v1/auth/token",
            json={"username": name, "password": "guess"},
            headers=sent_from("10.0.0.1"),
        )
    response = await glimpse.client.post(
        "/api/v1/auth/token",
        json={"username": "frank", "password": "guess"},
        headers=sent_from("10.0.0.1"),
    )
    assert_throttled(response, 3)
    # Alice signed in from there before: she is judged by her own failures only.
    assert (await sign_in(glimpse, "10.0.0.1", ALICE["password"])).status_code == 200


async def test_every_api_operation_documents_its_429(glimpse: Glimpse) -> None:
    document = (await glimpse.client.get("/openapi.json")).json()
    operations = [
        (path, method, op)
        for path, ops in document["paths"].items()
        if path.startswith("/api/")
        for method, op in ops.items()
    ]
    assert operations
    for path, method, op in operations:
        assert "429" in op["responses"], (method, path)


@budgets("follows=3/minute;comments=2/minute")
async def test_follows_and_comments_have_budgets_of_their_own_per_account(
    glimpse: Glimpse,
) -> None:
    from tests.api.social import quick_post, user_id

    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    for name in ("c", "d", "e", "f"):
        await glimpse.signup(name)
    answers = [
        await glimpse.client.post(f"/api/v1/users/{n}/follow", headers=alice) for n in "cdef"
    ]
    assert [r.status_code for r in answers[:3]] == [200, 200, 200]
    assert_throttled(answers[3], 3)
    # Bob's budget is his own.
    assert (await glimpse.client.post("/api/v1/users/f/follow", headers=bob)).status_code == 200
    post_id = await quick_post(glimpse, await user_id(glimpse, bob))
    comments = [
        await glimpse.client.post(
            f"/api/v1/posts/{post_id}/comments", headers=alice, json={"text": "hi"}
        )
        for _ in range(3)
    ]
    assert [r.status_code for r in comments[:2]] == [201, 201]
    assert_throttled(comments[2], 2)
    shown = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=bob)
    assert shown.json()["comment_count"] == 2  # the refused one left nothing


@budgets("api=10/minute")
async def test_a_token_the_feed_accepted_gets_a_budget_of_its_own(glimpse: Glimpse) -> None:
    # The feed authenticates on a short way of its own (feed/routes.py); a token it accepts
    # must earn its budget as one accepted by any other route does.
    headers = await glimpse.signup()
    assert (await glimpse.client.get("/api/v1/feed", headers=headers)).status_code == 200
    responses = await asyncio.gather(
        *(glimpse.client.get("/api/v1/feed", headers=headers) for _ in range(25))
    )
    assert statuses(responses) == {200: 10, 429: 15}
    # The address's budget was left alone by all of them: a stranger there is still heard
    # (and refused for want of a token, not throttled).
    assert_error(await glimpse.client.get("/api/v1/filters"), 401)
