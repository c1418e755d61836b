"""The home feed through the real app: fan-out on write and its undoing, the hybrid merge of
large accounts, rebuilds, scrolling past the cache, ranking, and cursors that stay stable while
likes and new posts change the ranking (API.md, "Feed"). Every test runs over both feed stores,
as the stacks have them (tests/api/conftest.py): the embedded tables and Redis."""

from __future__ import annotations

import random
import time
from collections.abc import Collection

import pytest
from sqlalchemy import text

from glimpse.feed.ranking import Candidate, rank_candidates
from glimpse.ids import id_timestamp_ms
from tests.api.social import (
    block,
    feed,
    feed_ids,
    follow,
    go_private,
    like,
    quick_post,
    unfollow,
    user_id,
    walk_feed,
)
from tests.api.test_posts import publish
from tests.conftest import Glimpse, assert_error


async def entries_of(glimpse: Glimpse, viewer: int) -> list[int]:
    window = await glimpse.container.feed_store.window(viewer, None, 100_000)
    return [] if window is None else [p for p, _ in window.entries]


async def has_feed(glimpse: Glimpse, viewer: int) -> bool:
    return await glimpse.container.feed_store.window(viewer, None, 1) is not None


async def read_long_ago(glimpse: Glimpse, viewer: int, read_at: float) -> None:
    """The viewer's feed, as it is, but last read (and built) at `read_at`."""
    store = glimpse.container.feed_store
    window = await store.window(viewer, None, 100_000)
    assert window is not None
    await store.drop(viewer)
    await store.begin_rebuild(viewer, read_at)
    await store.finish_rebuild(viewer, window.entries, window.horizon_id, read_at)


async def drop_every_feed(glimpse: Glimpse) -> None:
    async with glimpse.container.db.read() as s:
        users = (await s.execute(text("select id from users"))).scalars().all()
    for user in users:
        await glimpse.container.feed_store.drop(user)


async def set_likes(glimpse: Glimpse, post_id: int, likes: int) -> None:
    async with glimpse.container.db.write() as s:
        await s.execute(
            text("update posts set like_count = :n where id = :p"), {"n": likes, "p": post_id}
        )


async def test_a_processed_post_is_pushed_to_followers_feeds(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    assert (await feed(glimpse, bob))["items"] == []  # bob's feed is built (empty)
    assert await has_feed(glimpse, bob_id)
    post = await publish(glimpse, alice, caption="to my followers")  # upload, process, fan out
    assert await entries_of(glimpse, bob_id) == [int(post["id"])]
    shown = (await feed(glimpse, bob))["items"]
    assert [p["id"] for p in shown] == [post["id"]]
    assert shown[0]["caption"] == "to my followers" and shown[0]["status"] == "ready"
    assert len(shown[0]["media"][0]["variants"]) == 8
    # The author's own feed has it too.
    assert [p["id"] for p in (await feed(glimpse, alice))["items"]] == [post["id"]]


async def test_processing_posts_never_reach_a_feed(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    response = await glimpse.upload(alice)
    assert response.status_code == 202
    assert await feed_ids(glimpse, bob) == []
    assert await feed_ids(glimpse, alice) == []  # not even the author's


async def test_fan_out_skips_feeds_that_do_not_exist_and_a_missing_feed_is_rebuilt(
    glimpse: Glimpse,
) -> None:
    alice, carol = await glimpse.signup("alice"), await glimpse.signup("carol")
    carol_id = await user_id(glimpse, carol)
    await follow(glimpse, carol, "alice")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    assert not await has_feed(glimpse, carol_id)  # never read: nothing was pushed
    assert await feed_ids(glimpse, carol) == [str(post_id)]  # rebuilt from the database
    assert await entries_of(glimpse, carol_id) == [post_id]


async def test_rebuild_after_the_feed_store_is_emptied_gives_the_same_feed(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    alice_id, bob_id = await user_id(glimpse, alice), await user_id(glimpse, bob)
    posts = [await quick_post(glimpse, alice_id) for _ in range(5)]
    posts.append(await quick_post(glimpse, bob_id))
    await glimpse.run_jobs()
    before = await feed_ids(glimpse, bob)
    assert before == [str(p) for p in sorted(posts, reverse=True)]
    await drop_every_feed(glimpse)
    assert await feed_ids(glimpse, bob) == before
    assert await feed_ids(glimpse, bob, "ranked") != []
    assert sorted(await entries_of(glimpse, bob_id), reverse=True) == sorted(posts, reverse=True)


async def test_unfollow_takes_posts_out_on_the_very_next_read(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    assert await feed_ids(glimpse, bob) == [str(post_id)]
    await unfollow(glimpse, bob, "alice")
    # Before any job ran: the store still has it, the read does not show it.
    assert await entries_of(glimpse, bob_id) == [post_id]
    assert await feed_ids(glimpse, bob) == []
    assert await feed_ids(glimpse, bob, "ranked") == []
    await glimpse.run_jobs()
    assert await entries_of(glimpse, bob_id) == []


async def test_a_new_follow_merges_the_accounts_recent_posts_in(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await feed(glimpse, bob)
    posts = [await quick_post(glimpse, await user_id(glimpse, alice)) for _ in range(3)]
    await glimpse.run_jobs()
    assert await entries_of(glimpse, bob_id) == []
    await follow(glimpse, bob, "alice")
    await glimpse.run_jobs()
    assert await entries_of(glimpse, bob_id) == sorted(posts, reverse=True)
    assert await feed_ids(glimpse, bob) == [str(p) for p in sorted(posts, reverse=True)]


async def test_a_merge_after_the_follow_ended_adds_nothing(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await feed(glimpse, bob)
    await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    await follow(glimpse, bob, "alice")
    await unfollow(glimpse, bob, "alice")  # both jobs wait; they must agree with the end state
    await glimpse.run_jobs()
    assert await entries_of(glimpse, bob_id) == []


async def test_block_takes_posts_out_both_ways(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await follow(glimpse, alice, "bob")
    await feed(glimpse, alice)
    await feed(glimpse, bob)
    a_post = await quick_post(glimpse, await user_id(glimpse, alice))
    b_post = await quick_post(glimpse, await user_id(glimpse, bob))
    await glimpse.run_jobs()
    assert set(await feed_ids(glimpse, bob)) == {str(a_post), str(b_post)}
    await block(glimpse, bob, "alice")
    assert await feed_ids(glimpse, bob) == [str(b_post)]
    assert await feed_ids(glimpse, alice) == [str(a_post)]
    await glimpse.run_jobs()
    assert await entries_of(glimpse, await user_id(glimpse, bob)) == [b_post]


async def test_a_deleted_post_disappears_from_every_feed(glimpse: Glimpse) -> None:
    alice = await glimpse.signup("alice")
    fans = [await glimpse.signup(f"fan{i}") for i in range(3)]
    for fan in fans:
        await follow(glimpse, fan, "alice")
        await feed(glimpse, fan)
    post = await publish(glimpse, alice)
    for fan in fans:
        assert await feed_ids(glimpse, fan) == [post["id"]]
    deleted = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=alice)
    assert deleted.status_code == 204
    for fan in fans:
        assert await feed_ids(glimpse, fan) == []
    await glimpse.run_jobs()
    for fan in fans:
        assert await entries_of(glimpse, await user_id(glimpse, fan)) == []


async def test_a_private_post_never_reaches_a_non_follower_even_from_a_poisoned_cache(
    glimpse: Glimpse,
) -> None:
    alice, mallory = await glimpse.signup("alice"), await glimpse.signup("mallory")
    await go_private(glimpse, alice)
    await feed(glimpse, mallory)
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    # Whatever the store holds (a bug, a stale entry), the read checks the graph.
    await glimpse.container.feed_store.merge(
        await user_id(glimpse, mallory), [(post_id, await user_id(glimpse, alice))]
    )
    assert await feed_ids(glimpse, mallory) == []
    assert await feed_ids(glimpse, mallory, "ranked") == []


@pytest.mark.parametrize("settings", [{"feed_fanout_max_followers": 1}], indirect=True)
async def test_accounts_past_the_threshold_are_merged_in_at_read_time(glimpse: Glimpse) -> None:
    star = await glimpse.signup("star")
    fans = [await glimpse.signup(f"fan{i}") for i in range(2)]
    small, small_fan = await glimpse.signup("small"), await glimpse.signup("smallfan")
    for fan in fans:
        await follow(glimpse, fan, "star")
        await feed(glimpse, fan)
    await follow(glimpse, small_fan, "small")
    await feed(glimpse, small_fan)
    star_id = await user_id(glimpse, star)
    post_id = await quick_post(glimpse, star_id)
    small_post = await quick_post(glimpse, await user_id(glimpse, small))
    await glimpse.run_jobs()
    for fan in fans:
        fan_id = await user_id(glimpse, fan)
        assert await entries_of(glimpse, fan_id) == []  # not pushed...
        assert await feed_ids(glimpse, fan) == [str(post_id)]  # ...but merged in
        assert await feed_ids(glimpse, fan, "ranked") == [str(post_id)]
    assert await entries_of(glimpse, await user_id(glimpse, small_fan)) == [small_post]
    # The merge applies the graph like everything else: an unfollow counts at once.
    await unfollow(glimpse, fans[0], "star")
    assert await feed_ids(glimpse, fans[0]) == []


@pytest.mark.parametrize("settings", [{"feed_cap": 100}], indirect=True)
async def test_scrolling_past_the_cached_window_continues_from_the_database(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    alice_id = await user_id(glimpse, alice)
    posts = [await quick_post(glimpse, alice_id) for _ in range(140)]
    await glimpse.run_jobs()
    assert len(await entries_of(glimpse, bob_id)) <= 110  # the cap (about 100)
    expected = [str(p) for p in sorted(posts, reverse=True)]
    assert await walk_feed(glimpse, bob, "latest", limit=15) == expected
    ranked = await walk_feed(glimpse, bob, "ranked", limit=15)
    assert sorted(ranked, reverse=True) == expected and len(set(ranked)) == len(ranked)
    # A feed rebuilt from scratch is capped too, and scrolls as far.
    await glimpse.container.feed_store.drop(bob_id)
    assert await walk_feed(glimpse, bob, "latest", limit=40) == expected
    assert len(await entries_of(glimpse, bob_id)) == 100


async def test_an_inactive_feed_expires_and_is_rebuilt_when_read_again(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await follow(glimpse, bob, "alice")
    await feed(glimpse, bob)
    await glimpse.run_jobs()
    idle = time.time() - glimpse.container.settings.feed_idle_ttl_seconds - 60
    await read_long_ago(glimpse, bob_id, idle)
    from glimpse.feed.jobs import expire_inactive_feeds

    await expire_inactive_feeds(glimpse.container, {})
    assert not await has_feed(glimpse, bob_id)
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    assert await entries_of(glimpse, bob_id) == []  # inactive: fan-out spent nothing on bob
    assert await feed_ids(glimpse, bob) == [str(post_id)]
    assert await has_feed(glimpse, bob_id)


async def test_a_read_marks_an_old_feed_active_again(glimpse: Glimpse) -> None:
    bob = await glimpse.signup("bob")
    bob_id = await user_id(glimpse, bob)
    await feed(glimpse, bob)
    stale = time.time() - 2 * glimpse.container.feed_store.TOUCH_SECONDS
    await read_long_ago(glimpse, bob_id, stale)
    await feed(glimpse, bob)
    window = await glimpse.container.feed_store.window(bob_id, None, 1)
    assert window is not None and window.read_at > time.time() - 60


# --- ranking ----------------------------------------------------------------------------------


async def test_a_much_liked_post_outranks_a_slightly_newer_unliked_one(glimpse: Glimpse) -> None:
    alice, bob, carol = [await glimpse.signup(n) for n in ("alice", "bob", "carol")]
    await follow(glimpse, carol, "alice")
    await follow(glimpse, carol, "bob")
    older = await quick_post(glimpse, await user_id(glimpse, alice))
    newer = await quick_post(glimpse, await user_id(glimpse, bob))
    await glimpse.run_jobs()
    assert await feed_ids(glimpse, carol, "ranked") == [str(newer), str(older)]
    await set_likes(glimpse, older, 50)
    assert await feed_ids(glimpse, carol, "ranked") == [str(older), str(newer)]
    # Latest order ignores likes: strictly newest first.
    assert await feed_ids(glimpse, carol, "latest") == [str(newer), str(older)]


async def test_likes_through_the_api_count_and_show_as_liked_by_me(glimpse: Glimpse) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    post_id = await quick_post(glimpse, await user_id(glimpse, alice))
    await glimpse.run_jobs()
    await like(glimpse, bob, post_id)
    [shown] = (await feed(glimpse, bob))["items"]
    assert (shown["like_count"], shown["liked_by_me"]) == (1, True)
    [own] = (await feed(glimpse, alice))["items"]
    assert (own["like_count"], own["liked_by_me"]) == (1, False)


async def test_latest_order_is_strictly_chronological(glimpse: Glimpse) -> None:
    viewer = await glimpse.signup("viewer")
    authors = [await glimpse.signup(f"a{i}") for i in range(3)]
    for i in range(3):
        await follow(glimpse, viewer, f"a{i}")
    ids = [await user_id(glimpse, a) for a in authors]
    posts = [await quick_post(glimpse, random.Random(i).choice(ids)) for i in range(30)]
    await glimpse.run_jobs()
    for p in posts[::3]:
        await set_likes(glimpse, p, 1000)
    walked = [int(p) for p in await walk_feed(glimpse, viewer, "latest", limit=7)]
    assert walked == sorted(posts, reverse=True)


async def test_no_author_appears_more_than_twice_in_a_row_when_others_are_there(
    glimpse: Glimpse,
) -> None:
    viewer = await glimpse.signup("viewer")
    prolific, quiet1, quiet2 = [await glimpse.signup(n) for n in ("prolific", "quiet1", "quiet2")]
    for name in ("prolific", "quiet1", "quiet2"):
        await follow(glimpse, viewer, name)
    pid = await user_id(glimpse, prolific)
    for _ in range(3):
        await quick_post(glimpse, await user_id(glimpse, quiet1))
        await quick_post(glimpse, await user_id(glimpse, quiet2))
    for _ in range(12):
        await quick_post(glimpse, pid)
    await glimpse.run_jobs()
    items = (await feed(glimpse, viewer, "ranked", limit=18))["items"]
    authors = [p["author"]["username"] for p in items]
    assert len(authors) == 18
    left = {name: authors.count(name) for name in set(authors)}
    run = 0
    for i, name in enumerate(authors):
        run = run + 1 if i and authors[i - 1] == name else 1
        others_left = any(n != name and c > 0 for n, c in left.items())
        left[name] -= 1
        if run > 2:
            assert not others_left, authors


async def test_ranked_pages_follow_the_ranking_core(glimpse: Glimpse) -> None:
    # The route ranks with feed.ranking: the first page is what rank_candidates makes of the
    # candidates (here all of them: fewer than one window).
    viewer = await glimpse.signup("viewer")
    author = await glimpse.signup("author")
    await follow(glimpse, viewer, "author")
    aid = await user_id(glimpse, author)
    posts = [await quick_post(glimpse, aid) for _ in range(10)]
    await glimpse.run_jobs()
    for n, p in enumerate(posts):
        await set_likes(glimpse, p, (n * 7) % 10)
    expected = rank_candidates(
        [Candidate(p, aid, id_timestamp_ms(p), (n * 7) % 10, 0) for n, p in enumerate(posts)],
        now_ms=int(time.time() * 1000),
        affinity={},
    )
    shown = [int(p["id"]) for p in (await feed(glimpse, viewer, "ranked", limit=10))["items"]]
    assert shown == [c.post_id for c in expected]


# --- cursors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_a_ranked_walk_never_repeats_or_skips_while_likes_and_posts_change_it(
    glimpse: Glimpse, seed: int
) -> None:
    rng = random.Random(seed)
    viewer = await glimpse.signup("viewer")
    authors = [await glimpse.signup(f"a{i}") for i in range(4)]
    for i in range(4):
        await follow(glimpse, viewer, f"a{i}")
    author_ids = [await user_id(glimpse, a) for a in authors]
    existing = {await quick_post(glimpse, rng.choice(author_ids)) for _ in range(90)}
    await glimpse.run_jobs()
    seen: list[int] = []
    cursor = None
    for _ in range(100):
        page = await feed(glimpse, viewer, "ranked", rng.choice([1, 5, 13, 40]), cursor)
        seen += [int(p["id"]) for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        # Meanwhile: likes move posts up and down, the viewer's affinity changes, and new posts
        # arrive (they belong to a later walk).
        for post_id in rng.sample(sorted(existing), 10):
            await set_likes(glimpse, post_id, rng.randrange(0, 500))
        await like(glimpse, viewer, rng.choice(sorted(existing)))
        for _ in range(rng.randrange(0, 3)):
            await quick_post(glimpse, rng.choice(author_ids))
        await glimpse.run_jobs()
    assert cursor is None
    assert len(seen) == len(set(seen)), "a post came twice"
    assert set(seen) >= existing, "a post was skipped"
    assert set(seen) == existing  # (posts made during the walk wait for the next one)


async def test_a_latest_walk_never_repeats_or_skips_while_posts_arrive(glimpse: Glimpse) -> None:
    viewer = await glimpse.signup("viewer")
    author = await glimpse.signup("author")
    await follow(glimpse, viewer, "author")
    aid = await user_id(glimpse, author)
    existing = [await quick_post(glimpse, aid) for _ in range(25)]
    await glimpse.run_jobs()
    seen: list[int] = []
    cursor = None
    while True:
        page = await feed(glimpse, viewer, "latest", 4, cursor)
        seen += [int(p["id"]) for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        await quick_post(glimpse, aid)
        await glimpse.run_jobs()
    assert seen == sorted(existing, reverse=True)


async def test_forged_or_foreign_feed_cursors_are_a_400(glimpse: Glimpse) -> None:
    viewer = await glimpse.signup("viewer")
    vid = await user_id(glimpse, viewer)
    for _ in range(5):
        await quick_post(glimpse, vid)
    await glimpse.run_jobs()
    ranked = (await feed(glimpse, viewer, "ranked", 2))["next_cursor"]
    latest = (await feed(glimpse, viewer, "latest", 2))["next_cursor"]
    assert ranked and latest
    body, sig = ranked.split(".")
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    for order, bad in [
        ("ranked", f"{body}.{flipped}"),
        ("ranked", body[:-2] + "." + sig),
        ("ranked", latest),  # another order's cursor
        ("latest", ranked),
        ("ranked", "not-a-cursor"),
        ("ranked", "x" * 5000),
    ]:
        response = await glimpse.client.get(
            "/api/v1/feed", headers=viewer, params={"order": order, "cursor": bad}
        )
        assert_error(response, 400, "invalid_cursor")
    profile_cursor = await glimpse.client.get(
        "/api/v1/users/viewer/posts", headers=viewer, params={"limit": 1}
    )
    response = await glimpse.client.get(
        "/api/v1/feed", headers=viewer, params={"cursor": profile_cursor.json()["next_cursor"]}
    )
    assert_error(response, 400, "invalid_cursor")
    bad_order = await glimpse.client.get("/api/v1/feed", headers=viewer, params={"order": "best"})
    assert_error(bad_order, 422)
    assert_error(await glimpse.client.get("/api/v1/feed"), 401)


# --- what a feed page shows -------------------------------------------------------------------


async def test_a_feed_item_is_the_same_post_that_get_shows(glimpse: Glimpse) -> None:
    # The feed serialises its pages itself (posts/views.post_view_data); the post route goes
    # through the PostOut model. A client must not tell the two apart.
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    post = await publish(glimpse, alice, caption="same \u00e9verywhere", filter="clarendon")
    await like(glimpse, bob, post["id"])
    for viewer in (alice, bob):
        for order in ("ranked", "latest"):
            [item] = (await feed(glimpse, viewer, order))["items"]
            shown = await glimpse.client.get(f"/api/v1/posts/{post['id']}", headers=viewer)
            assert item == shown.json()


async def test_media_urls_in_the_feed_turn_signed_when_the_author_goes_private(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await follow(glimpse, bob, "alice")
    await publish(glimpse, alice)
    [item] = (await feed(glimpse, bob))["items"]  # (its media view is now kept in memory)
    urls = [v["url"] for v in item["media"][0]["variants"]]
    assert urls and not any("sig=" in u for u in urls)
    await go_private(glimpse, alice)
    [item] = (await feed(glimpse, bob))["items"]
    urls = [v["url"] for v in item["media"][0]["variants"]]
    assert all("sig=" in u and "&v=" in u for u in urls)
    for url in urls[:2]:
        assert (await glimpse.client.get(url)).status_code == 200
        assert (await glimpse.client.get(url.split("?")[0])).status_code == 404


@pytest.mark.parametrize("settings", [{"feed_cap": 100}], indirect=True)
async def test_following_an_account_with_more_posts_than_the_cap_still_scrolls_to_its_first(
    glimpse: Glimpse,
) -> None:
    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    await feed(glimpse, bob)  # bob's feed exists before the follow: the follow merges into it
    alice_id = await user_id(glimpse, alice)
    posts = [await quick_post(glimpse, alice_id) for _ in range(130)]
    await glimpse.run_jobs()
    await follow(glimpse, bob, "alice")
    await glimpse.run_jobs()
    assert len(await entries_of(glimpse, await user_id(glimpse, bob))) == 100
    expected = [str(p) for p in sorted(posts, reverse=True)]
    assert await walk_feed(glimpse, bob, "latest", limit=30) == expected
    assert sorted(await walk_feed(glimpse, bob, "ranked", limit=30), reverse=True) == expected


async def test_whatever_the_cache_holds_a_feed_shows_only_what_belongs_in_it(
    glimpse: Glimpse,
) -> None:
    viewer, friend, stranger = (
        await glimpse.signup("viewer"),
        await glimpse.signup("friend"),
        await glimpse.signup("stranger"),
    )
    vid, fid, sid = [await user_id(glimpse, h) for h in (viewer, friend, stranger)]
    await follow(glimpse, viewer, "friend")
    await feed(glimpse, viewer)
    good = await quick_post(glimpse, fid)
    stranger_post = await quick_post(glimpse, sid)  # public, but not followed
    processing = (await glimpse.upload(viewer)).json()["id"]  # the viewer's own, unfinished
    await glimpse.run_jobs()
    blocked_friend = await glimpse.signup("blocker")
    bid = await user_id(glimpse, blocked_friend)
    await follow(glimpse, viewer, "blocker")
    blocker_post = await quick_post(glimpse, bid)
    await glimpse.run_jobs()
    await block(glimpse, blocked_friend, "viewer")
    async with glimpse.container.db.write() as s:
        await s.execute(
            text("update posts set status = 'processing' where id = :p"), {"p": int(processing)}
        )
    await glimpse.container.feed_store.merge(
        vid, [(stranger_post, sid), (int(processing), vid), (blocker_post, bid), (12345, fid)]
    )
    for order in ("latest", "ranked"):
        assert await feed_ids(glimpse, viewer, order) == [str(good)], order


# --- edges the mutation run found untested ------------------------------------------------------


async def test_a_latest_page_exactly_filled_ends_the_walk(glimpse: Glimpse) -> None:
    viewer, a, b = [await glimpse.signup(n) for n in ("viewer", "a", "b")]
    await follow(glimpse, viewer, "a")
    await follow(glimpse, viewer, "b")
    await feed(glimpse, viewer)
    await quick_post(glimpse, await user_id(glimpse, b))
    a_posts = [await quick_post(glimpse, await user_id(glimpse, a)) for _ in range(2)]
    await glimpse.run_jobs()
    await unfollow(glimpse, viewer, "b")  # b's post still in the store: the read drops it
    page = await feed(glimpse, viewer, "latest", limit=2)
    assert [p["id"] for p in page["items"]] == [str(p) for p in reversed(a_posts)]
    assert page["next_cursor"] is None


async def test_posts_pinned_in_a_ranked_cursor_are_checked_again_when_served(
    glimpse: Glimpse,
) -> None:
    viewer, a, b = [await glimpse.signup(n) for n in ("viewer", "a", "b")]
    await follow(glimpse, viewer, "a")
    await follow(glimpse, viewer, "b")
    for author in (a, b):
        for _ in range(4):
            await quick_post(glimpse, await user_id(glimpse, author))
    await glimpse.run_jobs()
    first = await feed(glimpse, viewer, "ranked", limit=2)
    await unfollow(glimpse, viewer, "b")
    cursor, authors = first["next_cursor"], []
    while cursor:
        page = await feed(glimpse, viewer, "ranked", 2, cursor)
        authors += [p["author"]["username"] for p in page["items"]]
        cursor = page["next_cursor"]
    assert authors and "b" not in authors


@pytest.mark.parametrize("settings", [{"feed_fanout_max_followers": 0}], indirect=True)
async def test_a_large_accounts_posts_are_paged_like_the_rest(glimpse: Glimpse) -> None:
    viewer, star = await glimpse.signup("viewer"), await glimpse.signup("star")
    await follow(glimpse, viewer, "star")
    await feed(glimpse, viewer)
    posts = [await quick_post(glimpse, await user_id(glimpse, star)) for _ in range(7)]
    await glimpse.run_jobs()
    assert await entries_of(glimpse, await user_id(glimpse, viewer)) == []  # merged at read time
    expected = [str(p) for p in sorted(posts, reverse=True)]
    assert await walk_feed(glimpse, viewer, "latest", limit=2) == expected
    ranked = await walk_feed(glimpse, viewer, "ranked", limit=2)
    assert sorted(ranked, reverse=True) == expected and len(ranked) == len(set(ranked))


@pytest.mark.parametrize("settings", [{"feed_fanout_max_followers": 1}], indirect=True)
async def test_an_account_at_the_threshold_is_still_fanned_out(glimpse: Glimpse) -> None:
    fan, small = await glimpse.signup("fan"), await glimpse.signup("small")
    await feed(glimpse, fan)
    await follow(glimpse, fan, "small")  # exactly one follower: at the threshold, not past it
    await glimpse.run_jobs()  # the merge job runs before small posts anything
    post_id = await quick_post(glimpse, await user_id(glimpse, small))
    await glimpse.run_jobs()
    assert await entries_of(glimpse, await user_id(glimpse, fan)) == [post_id]


async def test_fan_out_reaches_followers_past_its_first_batch(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    from glimpse.feed import jobs

    monkeypatch.setattr(jobs, "FAN_OUT_BATCH", 2)
    author = await glimpse.signup("author")
    fans = [await glimpse.signup(f"fan{i}") for i in range(5)]
    for fan in fans:
        await follow(glimpse, fan, "author")
        await feed(glimpse, fan)
    post_id = await quick_post(glimpse, await user_id(glimpse, author))
    await glimpse.run_jobs()
    for fan in fans:
        assert await entries_of(glimpse, await user_id(glimpse, fan)) == [post_id]
    assert (
        await glimpse.client.delete(f"/api/v1/posts/{post_id}", headers=author)
    ).status_code == 204
    await glimpse.run_jobs()
    for fan in fans:
        assert await entries_of(glimpse, await user_id(glimpse, fan)) == []


async def test_fan_out_writes_one_transaction_per_batch_the_authors_own_feed_in_the_first(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each commit is an fsync, the largest part of a fan-out (bench/bench_feed.py): the
    # author's own feed must not cost a transaction of its own.
    from glimpse.feed import jobs

    monkeypatch.setattr(jobs, "FAN_OUT_BATCH", 2)
    author = await glimpse.signup("author")
    fans = [await glimpse.signup(f"fan{i}") for i in range(3)]
    for fan in fans:
        await follow(glimpse, fan, "author")
        await feed(glimpse, fan)
    await feed(glimpse, author)
    await glimpse.run_jobs()
    store = glimpse.container.feed_store
    pushes: list[list[int]] = []
    real_push = store.push

    async def counted_push(post_id: int, author_id: int, user_ids: Collection[int]) -> int:
        pushes.append(sorted(user_ids))
        return await real_push(post_id, author_id, user_ids)

    monkeypatch.setattr(store, "push", counted_push)
    author_id = await user_id(glimpse, author)
    fan_ids = [await user_id(glimpse, fan) for fan in fans]
    post_id = await quick_post(glimpse, author_id)
    await glimpse.run_jobs()
    assert len(pushes) == 2  # 1 author + 3 followers, in batches of 2 followers
    assert sorted(u for push in pushes for u in push) == sorted([author_id, *fan_ids])
    assert author_id in pushes[0]
    for viewer in (author_id, *fan_ids):
        assert await entries_of(glimpse, viewer) == [post_id]


async def test_feed_jobs_run_out_of_order_agree_with_the_final_relation(glimpse: Glimpse) -> None:
    from glimpse.feed.jobs import merge_author_into_feed, remove_author_from_feed

    alice, bob = await glimpse.signup("alice"), await glimpse.signup("bob")
    aid, bid = await user_id(glimpse, alice), await user_id(glimpse, bob)
    await feed(glimpse, bob)
    post_id = await quick_post(glimpse, aid)
    await glimpse.run_jobs()
    await follow(glimpse, bob, "alice")
    await unfollow(glimpse, bob, "alice")
    await follow(glimpse, bob, "alice")  # following in the end
    payload = {"user_id": bid, "author_id": aid}
    await merge_author_into_feed(glimpse.container, payload)
    await remove_author_from_feed(glimpse.container, payload)  # the old unfollow's, late
    assert await entries_of(glimpse, bid) == [post_id]
    await unfollow(glimpse, bob, "alice")  # not following in the end
    await remove_author_from_feed(glimpse.container, payload)
    await merge_author_into_feed(glimpse.container, payload)  # the old follow's, late
    assert await entries_of(glimpse, bid) == []


async def _ranked_first(glimpse: Glimpse, viewer: dict[str, str]) -> str:
    return str((await feed(glimpse, viewer, "ranked", limit=1))["items"][0]["author"]["username"])


async def test_affinity_counts_recent_likes_of_others_only(glimpse: Glimpse) -> None:
    viewer, friend, other = [await glimpse.signup(n) for n in ("viewer", "friend", "other")]
    vid, fid, oid = [await user_id(glimpse, h) for h in (viewer, friend, other)]
    await follow(glimpse, viewer, "friend")
    await follow(glimpse, viewer, "other")
    liked = [await quick_post(glimpse, fid) for _ in range(5)]
    own = [await quick_post(glimpse, vid) for _ in range(5)]
    old = [await quick_post(glimpse, oid) for _ in range(5)]
    await glimpse.run_jobs()
    for post_id in liked + own + old:
        await like(glimpse, viewer, post_id)
    async with glimpse.container.db.write() as s:  # the likes of `other`: years old
        await s.execute(
            text(
                "update likes set created_at = '2020-01-01 00:00:00.000000'"
                f" where post_id in ({','.join(map(str, old))})"
            )
        )
        await s.execute(text("update posts set like_count = 0"))
    await quick_post(glimpse, fid)
    await quick_post(glimpse, oid)  # newer than the friend's: only affinity can lift the friend
    await glimpse.run_jobs()
    assert await _ranked_first(glimpse, viewer) == "friend"
    # Likes of one's own posts are no affinity: a newer post of `other` beats the viewer's own.
    await quick_post(glimpse, vid)
    await quick_post(glimpse, oid)
    await glimpse.run_jobs()
    async with glimpse.container.db.write() as s:
        await s.execute(text(f"delete from likes where post_id in ({','.join(map(str, liked))})"))
    assert await _ranked_first(glimpse, viewer) == "other"


async def test_media_views_of_private_posts_are_not_kept_for_others(glimpse: Glimpse) -> None:
    alice, bob, carol = [await glimpse.signup(n) for n in ("alice", "bob", "carol")]
    await go_private(glimpse, alice)
    await follow(glimpse, bob, "alice")
    await glimpse.client.post("/api/v1/me/follow-requests/bob/accept", headers=alice)
    await publish(glimpse, alice)
    [seen] = (await feed(glimpse, bob))["items"]  # signed for bob
    assert all("sig=" in v["url"] for v in seen["media"][0]["variants"])
    await go_private(glimpse, alice, False)
    await follow(glimpse, carol, "alice")
    await glimpse.run_jobs()
    [seen] = (await feed(glimpse, carol))["items"]
    assert not any("sig=" in v["url"] for v in seen["media"][0]["variants"])


async def test_the_expiry_job_keeps_feeds_read_lately(glimpse: Glimpse) -> None:
    from glimpse.feed.jobs import expire_inactive_feeds

    bob = await glimpse.signup("bob")
    await feed(glimpse, bob)
    await expire_inactive_feeds(glimpse.container, {})
    assert await has_feed(glimpse, await user_id(glimpse, bob))


# --- the route's short way in (feed/routes._FeedRoute) -----------------------------------------


async def test_every_feed_query_is_read_as_the_declared_parameters_read_it(
    glimpse: Glimpse,
) -> None:
    # Plain queries skip FastAPI's parameter checks; anything else must still get the answer
    # the declared parameters give (the last of a repeated parameter, their 422s).
    viewer = await glimpse.signup("viewer")
    vid = await user_id(glimpse, viewer)
    posts = [await quick_post(glimpse, vid) for _ in range(3)]
    await glimpse.run_jobs()
    newest_first = [str(p) for p in sorted(posts, reverse=True)]
    for query, shown in [
        ("limit=2", 2),
        ("limit=02", 2),
        ("limit=1&limit=2", 2),
        ("limit=2&limit=1", 1),
        ("limit=%2B2", 2),
        ("limit=%202", 2),
        ("limit=1_0", 3),
        ("cursor=", 3),
        ("order=latest&order=ranked&limit=3", 3),
    ]:
        response = await glimpse.client.get(f"/api/v1/feed?{query}", headers=viewer)
        assert response.status_code == 200, (query, response.text)
        assert len(response.json()["items"]) == shown, query
    latest = await glimpse.client.get("/api/v1/feed?order=ranked&order=latest", headers=viewer)
    assert [p["id"] for p in latest.json()["items"]] == newest_first
    for query, code in [
        ("limit=0", "invalid_limit"),
        ("limit=101", "invalid_limit"),
        ("limit=1234567890", "invalid_limit"),
        ("limit=", "invalid"),
        ("limit=two", "invalid"),
        ("order=", "invalid"),
        ("order=RANKED", "invalid"),
        ("order=latest&order=best", "invalid"),
    ]:
        response = await glimpse.client.get(f"/api/v1/feed?{query}", headers=viewer)
        assert_error(response, 422, code)


async def test_the_feed_reads_its_bearer_token_as_every_route_does(glimpse: Glimpse) -> None:
    viewer = await glimpse.signup("viewer")
    token = viewer["Authorization"].removeprefix("Bearer ")
    for header in (f"bearer {token}", f"Bearer   {token}  "):
        response = await glimpse.client.get("/api/v1/feed", headers={"Authorization": header})
        assert response.status_code == 200, header
    for header, code in [
        (f"Basic {token}", "unauthenticated"),
        ("Bearer", "unauthenticated"),
        ("", "unauthenticated"),
        ("Bearer glp_made_up", "invalid_token"),
        (f"Bearer {token}x", "invalid_token"),
    ]:
        response = await glimpse.client.get(
            "/api/v1/feed?limit=5", headers={"Authorization": header} if header else {}
        )
        assert_error(response, 401, code)
    assert (await glimpse.client.delete("/api/v1/auth/token", headers=viewer)).status_code == 204
    assert_error(await glimpse.client.get("/api/v1/feed", headers=viewer), 401, "invalid_token")
    other = await glimpse.signup("other")
    assert (await glimpse.client.get("/api/v1/feed", headers=other)).status_code == 200
    async with glimpse.container.db.write() as s:
        await s.execute(text("update access_tokens set expires_at = '2000-01-01 00:00:00.000000'"))
    assert_error(await glimpse.client.get("/api/v1/feed", headers=other), 401, "invalid_token")


# (Counts changed by hand, not by likes: the kept first page would show them a moment later.)
@pytest.mark.parametrize(
    "settings", [{"feed_viewer_memo_seconds": 600, "feed_kept_page_seconds": 0}], indirect=True
)
async def test_a_remembered_ranking_gives_way_to_new_likes_posts_and_affinity(
    glimpse: Glimpse,
) -> None:
    # The order of a window is remembered per viewer (feed/service._Reader._rank) only for the
    # same posts with the same counts: any change is ranked afresh on the very next read.
    viewer = await glimpse.signup("viewer")
    authors = [await glimpse.signup(f"a{i}") for i in range(3)]
    for i in range(3):
        await follow(glimpse, viewer, f"a{i}")
    author_ids = [await user_id(glimpse, a) for a in authors]
    posts = [await quick_post(glimpse, author_ids[n % 3]) for n in range(9)]
    await glimpse.run_jobs()

    async def ranked() -> list[int]:
        page = await feed(glimpse, viewer, "ranked", limit=9)
        return [int(p["id"]) for p in page["items"]]

    def expected() -> list[int]:
        return [
            c.post_id
            for c in rank_candidates(
                [
                    Candidate(p, author_ids[n % 3], id_timestamp_ms(p), likes[p], comments[p])
                    for n, p in enumerate(posts)
                ],
                now_ms=int(time.time() * 1000),
                affinity={},
            )
        ]

    likes = dict.fromkeys(posts, 0)
    comments = dict.fromkeys(posts, 0)
    assert await ranked() == expected() == sorted(posts, reverse=True)
    assert await ranked() == expected()  # remembered: the same
    likes[posts[0]] = 400
    await set_likes(glimpse, posts[0], 400)  # the oldest, liked: it rises
    assert (await ranked())[0] == posts[0]
    assert await ranked() == expected()
    async with glimpse.container.db.write() as s:
        await s.execute(text("update posts set comment_count = 300 where id = :p"), {"p": posts[1]})
    comments[posts[1]] = 300
    assert await ranked() == expected()
    assert (await ranked())[0] == posts[1]
    newest = await quick_post(glimpse, author_ids[0])  # a new post: ranked with the rest
    await glimpse.run_jobs()
    assert newest in await ranked()
