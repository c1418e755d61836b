"""The social graph through the real app: follows, private accounts' requests, blocks, the
lists and their cursors, and counters that stay exact under concurrency (API.md, "Social
graph")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.api.social import accept, block, follow, go_private, profile, unfollow, user_id
from tests.conftest import Glimpse, assert_error


async def counts(glimpse: Glimpse, headers: dict[str, str], username: str) -> tuple[int, int]:
    user = await profile(glimpse, headers, username)
    return user["follower_count"], user["following_count"]


async def test_following_a_public_account_is_immediate_and_counted(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "none"
    assert await follow(glimpse, bob, "alice") == "following"
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "following"
    assert (await profile(glimpse, alice, "alice"))["follow_status"] == "self"
    assert (await profile(glimpse, alice, "bob"))["follow_status"] == "none"  # not mutual
    assert await counts(glimpse, alice, "alice") == (1, 0)
    assert await counts(glimpse, alice, "bob") == (0, 1)


async def test_follow_and_unfollow_are_idempotent(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    for _ in range(3):
        assert await follow(glimpse, bob, "alice") == "following"
    assert await counts(glimpse, alice, "alice") == (1, 0)
    for _ in range(3):
        await unfollow(glimpse, bob, "alice")
    assert await counts(glimpse, alice, "alice") == (0, 0)
    assert await counts(glimpse, alice, "bob") == (0, 0)


async def test_follow_request_to_private_account_is_pending_until_accepted(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    assert await follow(glimpse, bob, "alice") == "pending"
    assert await follow(glimpse, bob, "alice") == "pending"  # asking twice is one request
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "pending"
    assert await counts(glimpse, alice, "alice") == (0, 0)  # a request is no follow
    requests = (await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)).json()
    assert [u["username"] for u in requests["items"]] == ["bob"]
    assert requests["next_cursor"] is None
    await accept(glimpse, alice, "bob")
    await accept(glimpse, alice, "bob")  # accepting again is fine
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "following"
    assert await counts(glimpse, alice, "alice") == (1, 0)
    assert (await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)).json()[
        "items"
    ] == []


async def test_denied_or_withdrawn_requests_leave_nothing(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    carol = await glimpse.signup("carol")
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await follow(glimpse, carol, "alice")
    deny = await glimpse.client.delete("/api/v1/me/follow-requests/bob", headers=alice)
    assert deny.status_code == 204
    await unfollow(glimpse, carol, "alice")  # withdraws carol's request
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "none"
    assert (await profile(glimpse, carol, "alice"))["follow_status"] == "none"
    listed = (await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)).json()
    assert listed["items"] == []
    # Accepting a request nobody made is a 404; denying one is idempotent.
    assert_error(
        await glimpse.client.post("/api/v1/me/follow-requests/bob/accept", headers=alice),
        404,
        "follow_request_not_found",
    )
    again = await glimpse.client.delete("/api/v1/me/follow-requests/bob", headers=alice)
    assert again.status_code == 204
    assert await counts(glimpse, alice, "alice") == (0, 0)


async def test_going_public_lets_everyone_who_asked_follow(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await go_private(glimpse, alice, False)
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "following"
    assert await counts(glimpse, alice, "alice") == (1, 0)


async def test_follow_of_oneself_or_nobody_is_refused(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    assert_error(
        await glimpse.client.post("/api/v1/users/alice/follow", headers=alice),
        422,
        "cannot_follow_self",
    )
    for path in ("/api/v1/users/nobody/follow", "/api/v1/users/NOT%20A%20NAME/follow"):
        assert_error(await glimpse.client.post(path, headers=alice), 404, "user_not_found")
    assert_error(await glimpse.client.post("/api/v1/users/alice/follow"), 401)


async def test_block_ends_follows_both_ways_and_hides_the_blocker(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await follow(glimpse, alice, "bob")
    await block(glimpse, alice, "bob")
    await block(glimpse, alice, "bob")  # idempotent
    assert await counts(glimpse, alice, "alice") == (0, 0)
    assert await counts(glimpse, alice, "bob") == (0, 0)
    # Bob no longer finds alice anywhere, and cannot follow her back.
    for method, path in [
        ("GET", "/api/v1/users/alice"),
        ("GET", "/api/v1/users/alice/posts"),
        ("GET", "/api/v1/users/alice/followers"),
        ("GET", "/api/v1/users/alice/following"),
        ("POST", "/api/v1/users/alice/follow"),
        ("POST", "/api/v1/users/alice/block"),
    ]:
        response = await glimpse.client.request(method, path, headers=bob)
        assert_error(response, 404, "user_not_found")
    # Alice still sees bob's profile (to unblock him), but must unblock before following.
    assert (await profile(glimpse, alice, "bob"))["follow_status"] == "none"
    assert_error(
        await glimpse.client.post("/api/v1/users/bob/follow", headers=alice),
        403,
        "blocked_account",
    )
    unblocked = await glimpse.client.delete("/api/v1/users/bob/block", headers=alice)
    assert unblocked.status_code == 204
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "none"  # follows stay ended
    assert await follow(glimpse, bob, "alice") == "following"


async def test_block_withdraws_pending_requests_both_ways(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await block(glimpse, alice, "bob")
    await glimpse.client.delete("/api/v1/users/bob/block", headers=alice)
    listed = (await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)).json()
    assert listed["items"] == []


async def test_lists_page_newest_first_without_repeats_or_gaps(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    names = [f"fan{i:02d}" for i in range(23)]
    fans = [await glimpse.signup(name) for name in names]
    for fan in fans:
        await follow(glimpse, fan, "star")
    for kind, owner, expected in [
        ("followers", "star", list(reversed(names))),
        ("following", "fan00", ["star"]),
    ]:
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
            page = await glimpse.client.get(
                f"/api/v1/users/{owner}/{kind}", headers=star, params=params
            )
            assert page.status_code == 200, page.text
            body = page.json()
            assert len(body["items"]) <= 5
            seen += [u["username"] for u in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == expected
    # Each listed user carries the caller's follow_status towards them.
    await follow(glimpse, star, "fan05")
    page = await glimpse.client.get(
        "/api/v1/users/star/followers", headers=star, params={"limit": 100}
    )
    statuses = {u["username"]: u["follow_status"] for u in page.json()["items"]}
    assert statuses["fan05"] == "following" and statuses["fan06"] == "none"
    me = await glimpse.client.get("/api/v1/users/fan05/followers", headers=star)
    assert [u["follow_status"] for u in me.json()["items"]] == ["self"]


async def test_list_cursors_are_tamper_evident(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    for i in range(3):
        await follow(glimpse, await glimpse.signup(f"fan{i}"), "star")
    page = await glimpse.client.get(
        "/api/v1/users/star/followers", headers=star, params={"limit": 1}
    )
    cursor = page.json()["next_cursor"]
    body, sig = cursor.split(".")
    for bad in [
        cursor[:-1] + ("A" if cursor[-1] != "A" else "B"),
        body + ".",
        "x" * 50,
        f"{body}.{sig}.{sig}",
    ]:
        response = await glimpse.client.get(
            "/api/v1/users/star/followers", headers=star, params={"cursor": bad}
        )
        assert_error(response, 400, "invalid_cursor")
    # A followers cursor is no following cursor.
    response = await glimpse.client.get(
        "/api/v1/users/star/following", headers=star, params={"cursor": cursor}
    )
    assert_error(response, 400, "invalid_cursor")


async def test_private_lists_are_for_followers_only(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    carol = await glimpse.signup("carol")
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await accept(glimpse, alice, "bob")
    for kind in ("followers", "following"):
        path = f"/api/v1/users/alice/{kind}"
        assert_error(await glimpse.client.get(path, headers=carol), 403, "private_account")
        assert (await glimpse.client.get(path, headers=bob)).status_code == 200
        assert (await glimpse.client.get(path, headers=alice)).status_code == 200


@pytest.mark.parametrize("settings", [{"database_busy_timeout_ms": 30000}], indirect=True)
async def test_counts_stay_exact_under_concurrent_follows_and_unfollows(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    fans = [await glimpse.signup(f"fan{i}") for i in range(12)]

    async def churn(headers: dict[str, str]) -> None:
        # Each fan follows three times at once, unfollows twice at once, then follows again.
        await asyncio.gather(*(follow(glimpse, headers, "star") for _ in range(3)))
        await asyncio.gather(*(unfollow(glimpse, headers, "star") for _ in range(2)))
        await asyncio.gather(*(follow(glimpse, headers, "star") for _ in range(2)))

    await asyncio.gather(*(churn(fan) for fan in fans))
    assert await counts(glimpse, star, "star") == (12, 0)
    for i in range(12):
        assert await counts(glimpse, star, f"fan{i}") == (0, 1)
    # And the rows agree with the counters.
    followers = await glimpse.client.get(
        "/api/v1/users/star/followers", headers=star, params={"limit": 100}
    )
    assert len(followers.json()["items"]) == 12
    assert await user_id(glimpse, star) > 0


async def test_follow_requests_page_newest_first_and_leave_other_requests_alone(
    glimpse: Glimpse,
) -> None:
    bob, dave = await glimpse.signup("bob"), await glimpse.signup("dave")
    await go_private(glimpse, bob)
    await go_private(glimpse, dave)
    names = ["carol", "erin", "frank"]
    askers = {n: await glimpse.signup(n) for n in names}
    for n in names:
        await follow(glimpse, askers[n], "bob")
    await follow(glimpse, askers["carol"], "dave")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = await glimpse.client.get("/api/v1/me/follow-requests", headers=bob, params=params)
        assert page.status_code == 200, page.text
        seen += [u["username"] for u in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(names))
    await unfollow(glimpse, askers["carol"], "bob")  # withdraws from bob only
    daves = await glimpse.client.get("/api/v1/me/follow-requests", headers=dave)
    assert [u["username"] for u in daves.json()["items"]] == ["carol"]


async def test_going_public_leaves_no_request_behind(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await go_private(glimpse, alice, False)
    await go_private(glimpse, alice)
    listed = await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)
    assert listed.json()["items"] == []
    assert (await profile(glimpse, bob, "alice"))["follow_status"] == "following"


async def test_following_again_after_an_accepted_request_is_following(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    assert await follow(glimpse, bob, "alice") == "pending"
    await accept(glimpse, alice, "bob")
    assert await follow(glimpse, bob, "alice") == "following"
    listed = await glimpse.client.get("/api/v1/me/follow-requests", headers=alice)
    assert listed.json()["items"] == []


async def test_the_lists_of_an_account_one_blocks_are_refused_as_blocked(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    await glimpse.signup("bob")
    await block(glimpse, alice, "bob")
    for kind in ("followers", "following", "posts"):
        response = await glimpse.client.get(f"/api/v1/users/bob/{kind}", headers=alice)
        assert_error(response, 403, "blocked_account")


async def test_an_empty_cursor_is_the_first_page(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    await follow(glimpse, await glimpse.signup("fan"), "star")
    for path in ("/api/v1/users/star/followers", "/api/v1/users/star/posts", "/api/v1/feed"):
        response = await glimpse.client.get(path, headers=star, params={"cursor": ""})
        assert response.status_code == 200, (path, response.text)
    followers = await glimpse.client.get(
        "/api/v1/users/star/followers", headers=star, params={"cursor": ""}
    )
    assert [u["username"] for u in followers.json()["items"]] == ["fan"]


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)  # (SQLite: one writer)
async def test_a_block_committed_while_its_blocker_goes_public_leaves_no_follow(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bob asked to follow private Alice. Alice goes public (which lets in everyone who asked)
    # while, from another device, she blocks Bob: the block commits after going public read
    # its list of requests. No follow may outlive the block.
    from glimpse.graph import repository
    from glimpse.graph import service as graph_service

    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await go_private(glimpse, alice)
    assert await follow(glimpse, bob, "alice") == "pending"
    alice_id, bob_id = await user_id(glimpse, alice), await user_id(glimpse, bob)
    container = glimpse.container
    listed, blocked = asyncio.Event(), asyncio.Event()
    real = repository.requesters_of

    async def requesters_of(session: Any, target_id: int) -> list[int]:
        found = await real(session, target_id)
        listed.set()
        return found

    monkeypatch.setattr(repository, "requesters_of", requesters_of)

    async def blocking() -> None:
        async with container.db.write() as session:
            await graph_service.block(session, container.ids, container.settings, alice_id, "bob")
            blocked.set()
            await listed.wait()  # going public has read Bob's request, not yet this block
            await asyncio.sleep(0.3)  # (and waits on the pair's lock, or on the request's row)

    async def going_public() -> None:
        await blocked.wait()
        async with container.db.write() as session:
            await graph_service.accept_all_requests(
                session, container.ids, container.settings, alice_id
            )

    await asyncio.wait_for(asyncio.gather(blocking(), going_public()), 30)
    assert listed.is_set()
    async with container.db.read() as session:
        relation = await repository.relation(session, bob_id, alice_id)
    assert relation.blocked_by and not relation.follows and not relation.requested
    assert (await profile(glimpse, alice, "alice"))["follower_count"] == 0
