"""What every list route shares (API.md, Pagination): page sizes outside 1..100 are 422
`invalid_limit`, and a cursor is for the one list that issued it, not another account's."""

from __future__ import annotations

import pytest

from tests.api.social import block, follow, quick_post, user_id
from tests.conftest import Glimpse, assert_error


async def _lists(glimpse: Glimpse) -> tuple[dict[str, str], list[str]]:
    alice = await glimpse.signup("alice")
    aid = await user_id(glimpse, alice)
    post_id = await quick_post(glimpse, aid)
    await glimpse.run_jobs()
    return alice, [
        "/api/v1/feed",
        "/api/v1/feed?order=latest",
        "/api/v1/users/alice/posts",
        "/api/v1/users/alice/followers",
        "/api/v1/users/alice/following",
        "/api/v1/me/follow-requests",
        f"/api/v1/posts/{post_id}/comments",
    ]


@pytest.mark.parametrize("limit", ["0", "101", "-1", "99999999999999999999999"])
async def test_a_page_size_outside_1_to_100_is_invalid_limit(glimpse: Glimpse, limit: str) -> None:
    alice, paths = await _lists(glimpse)
    for path in paths:
        response = await glimpse.client.get(path, headers=alice, params={"limit": limit})
        assert_error(response, 422, "invalid_limit")
    for path in paths:
        response = await glimpse.client.get(path, headers=alice, params={"limit": "abc"})
        assert_error(response, 422)


async def test_one_accounts_cursor_is_refused_by_anothers_list(glimpse: Glimpse) -> None:
    names = ["alice", "bob"]
    headers = {n: await glimpse.signup(n) for n in names}
    fans = [await glimpse.signup(f"fan{i}") for i in range(3)]
    for n in names:
        for _ in range(2):
            await quick_post(glimpse, await user_id(glimpse, headers[n]))
        for fan in fans:
            await follow(glimpse, fan, n)
    await glimpse.run_jobs()
    for kind in ("posts", "followers"):
        first = await glimpse.client.get(
            f"/api/v1/users/alice/{kind}", headers=headers["bob"], params={"limit": 1}
        )
        cursor = first.json()["next_cursor"]
        assert cursor
        ok = await glimpse.client.get(
            f"/api/v1/users/alice/{kind}", headers=headers["bob"], params={"cursor": cursor}
        )
        assert ok.status_code == 200
        response = await glimpse.client.get(
            f"/api/v1/users/bob/{kind}", headers=headers["bob"], params={"cursor": cursor}
        )
        assert_error(response, 400, "invalid_cursor")


async def test_lists_leave_out_accounts_that_block_the_caller(glimpse: Glimpse) -> None:
    star, stalker, hider = (
        await glimpse.signup("star"),
        await glimpse.signup("stalker"),
        await glimpse.signup("hider"),
    )
    await follow(glimpse, hider, "star")
    await follow(glimpse, stalker, "star")
    await follow(glimpse, star, "hider")
    await block(glimpse, hider, "stalker")
    for path in ("/api/v1/users/star/followers", "/api/v1/users/star/following"):
        seen = await glimpse.client.get(path, headers=stalker)
        assert "hider" not in [u["username"] for u in seen.json()["items"]], path
        seen = await glimpse.client.get(path, headers=star)
        assert "hider" in [u["username"] for u in seen.json()["items"]], path
