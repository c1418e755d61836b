"""The kept first page of the home feed (feed/kept_pages.py): read again, it is served as it was
built, until its time is up or anything it depends on changes; and every change it depends on,
made through the API (in this process or another one over the same database), shows on the
very next read, in both orders.

Made a moment late, by design: others' likes and comments (the counts), which show within
feed_kept_page_seconds."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text

from glimpse.backends.queue.outbox import enqueue
from glimpse.config import Settings
from glimpse.feed import kept_pages, service
from glimpse.feed.names import FAN_OUT_JOB
from glimpse.ids import smallest_id_at
from glimpse.ops.metrics import FEED_KEPT_PAGES
from glimpse.posts.models import Post, PostStatus
from tests.api.social import block, feed, follow, go_private, like, quick_post, unfollow, user_id
from tests.api.test_posts import publish
from tests.conftest import Glimpse, running

Headers = dict[str, str]
KEPT_SECONDS = 30.0  # long: the tests move the container's clock past it instead of waiting


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def kept_served() -> float:
    return FEED_KEPT_PAGES.labels("kept")._value.get()


async def _kept_page(glimpse: Glimpse, viewer: Headers, order: str) -> dict[str, Any]:
    """The viewer's first page, read until it is kept (the first read builds the viewer's
    feed, which a page kept is watched under), and shown once more as kept."""
    await feed(glimpse, viewer, order)
    await feed(glimpse, viewer, order)
    served = kept_served()
    page = await feed(glimpse, viewer, order)
    assert kept_served() == served + 1, "the page was not kept"
    return page


@pytest.fixture
async def world(glimpse: Glimpse) -> dict[str, Any]:
    people = {name: await glimpse.signup(name) for name in ("viewer", "author", "other", "star")}
    await follow(glimpse, people["viewer"], "author")
    await follow(glimpse, people["viewer"], "other")
    post = await publish(glimpse, people["author"], caption="kept")
    return {"people": people, "post": post["id"]}


KEPT = pytest.mark.parametrize(
    "settings", [{"feed_kept_page_seconds": KEPT_SECONDS}], indirect=True
)


@KEPT
@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_page_read_again_is_served_as_kept_until_its_time_is_up(
    glimpse: Glimpse, world: dict[str, Any], order: str
) -> None:
    clock = Clock(glimpse.container.clock())
    glimpse.container.clock = clock
    viewer, post = world["people"]["viewer"], world["post"]
    page = await _kept_page(glimpse, viewer, order)
    assert [p["id"] for p in page["items"]] == [post]
    # A count changed by hand moves no mark: the page is a moment old...
    async with glimpse.container.db.write() as s:
        await s.execute(text("UPDATE posts SET like_count = 7 WHERE id = :p"), {"p": int(post)})
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 0
    clock.now += KEPT_SECONDS / 2 - 1  # (a page is kept between half and all of the time)
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 0
    # ...until its time is up.
    clock.now += KEPT_SECONDS / 2 + 1
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 7
    # Each page size and order is a page of its own.
    small = await feed(glimpse, viewer, order, limit=1)
    assert small["items"][0]["like_count"] == 7


def kept_count(result: str) -> float:
    return float(FEED_KEPT_PAGES.labels(result)._value.get())


@KEPT
@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_page_whose_time_is_up_is_kept_for_longer_while_its_counts_are_the_same(
    glimpse: Glimpse, world: dict[str, Any], order: str
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    viewer, post = world["people"]["viewer"], world["post"]
    page = await _kept_page(glimpse, viewer, order)
    built, renewed = kept_count("built"), kept_count("renewed")
    for _ in range(3):
        clock.now += KEPT_SECONDS
        assert await feed(glimpse, viewer, order) == page
    assert (kept_count("built"), kept_count("renewed")) == (built, renewed + 3)
    # Another's like changes a count: a moment late, as ever, the page is built again.
    await like(glimpse, world["people"]["other"], post)
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 0
    clock.now += KEPT_SECONDS
    assert (await feed(glimpse, viewer, order))["items"][0]["like_count"] == 1
    assert kept_count("built") == built + 1


@KEPT
async def test_a_page_is_built_again_once_it_is_as_old_as_renewals_may_make_it(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    viewer = world["people"]["viewer"]
    assert container.kept_pages.renew_for == 300  # (a private URL is signed for an hour)
    await _kept_page(glimpse, viewer, "ranked")
    built_at = clock.now
    built = kept_count("built")
    while clock.now + KEPT_SECONDS < built_at + container.kept_pages.renew_for:
        clock.now += KEPT_SECONDS
        await feed(glimpse, viewer, "ranked")
    assert kept_count("built") == built  # renewed all along
    clock.now = built_at + container.kept_pages.renew_for
    await feed(glimpse, viewer, "ranked")
    assert kept_count("built") == built + 1


@KEPT
async def test_a_like_on_a_post_of_the_window_off_the_page_is_a_change_too(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """A ranked first page is chosen from a whole window of posts (and its cursor holds the
    rest in order): a like on one the page does not show can put it on the page."""
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    people, older = world["people"], world["post"]
    newer = str(await quick_post(glimpse, await user_id(glimpse, people["other"])))
    await glimpse.run_jobs()
    for _ in range(3):
        page = await feed(glimpse, people["viewer"], "ranked", limit=1)
    assert [p["id"] for p in page["items"]] == [newer]
    await like(glimpse, people["star"], older)  # (a like is worth hours of age)
    clock.now += KEPT_SECONDS
    page = await feed(glimpse, people["viewer"], "ranked", limit=1)
    assert [p["id"] for p in page["items"]] == [older]


@KEPT
async def test_a_page_with_a_post_stamped_in_the_future_is_never_renewed(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """Its place in a ranking changes with time alone (its age stays 0 until then)."""
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    author_id = await user_id(glimpse, world["people"]["other"])
    ahead = smallest_id_at(int(time.time() * 1000) + 3_600_000)  # (another server's clock)
    async with container.db.write() as session:
        session.add(Post(id=ahead, author_id=author_id, status=PostStatus.READY))
        await session.flush()
        enqueue(session, container.ids, FAN_OUT_JOB, {"post_id": ahead}, max_attempts=5)
    await glimpse.run_jobs()
    await _kept_page(glimpse, world["people"]["viewer"], "ranked")
    built = kept_count("built")
    clock.now += KEPT_SECONDS
    await feed(glimpse, world["people"]["viewer"], "ranked")
    assert kept_count("built") == built + 1


@KEPT
async def test_the_viewers_own_like_ranks_the_next_page_with_their_new_affinity(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """A kept page may be renewed for minutes: the affinity it was ranked with (remembered a
    few seconds per viewer) is read afresh once the viewer's own mark moved."""
    container = glimpse.container
    container.viewer_memo = type(container.viewer_memo)(ttl_seconds=600)
    people = world["people"]
    older = world["post"]  # the author's, and the oldest
    newer = str(await quick_post(glimpse, await user_id(glimpse, people["author"])))
    newest = str(await quick_post(glimpse, await user_id(glimpse, people["other"])))
    await glimpse.run_jobs()
    await _kept_page(glimpse, people["viewer"], "ranked")  # (its affinity remembered: none)
    page = await feed(glimpse, people["viewer"], "ranked", limit=2)
    assert [p["id"] for p in page["items"]] == [newest, newer]
    await like(glimpse, people["viewer"], older)
    page = await feed(glimpse, people["viewer"], "ranked", limit=2)
    # The liked post first (its like), then the author's other post (the viewer's affinity to
    # its author: hours of age), before the newest post, of an author the viewer never liked.
    assert [p["id"] for p in page["items"]] == [older, newer]


@pytest.mark.parametrize(
    "settings", [{"feed_kept_page_seconds": KEPT_SECONDS, "avif_enabled": True}], indirect=True
)
async def test_a_page_with_photos_still_lacking_avif_copies_is_never_renewed(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """The copies are made a moment after the post is ready, by a worker: another process's
    summary of the post does not learn of them at once, so such a page is built again at the
    end of its time (and lists them then), never renewed for minutes without them."""
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    async with container.db.write() as s:  # (as before its AVIF job has run)
        await s.execute(
            text(
                "DELETE FROM media_variants WHERE content_type = 'image/avif' AND media_id IN"
                " (SELECT id FROM media WHERE post_id = :p)"
            ),
            {"p": int(world["post"])},
        )
    await container.post_summaries.forget([int(world["post"])])
    viewer = world["people"]["viewer"]
    page = await _kept_page(glimpse, viewer, "ranked")
    variants = page["items"][0]["media"][0]["variants"]
    assert variants and all(v["content_type"] != "image/avif" for v in variants)
    built = kept_count("built")
    clock.now += KEPT_SECONDS
    await feed(glimpse, viewer, "ranked")
    assert kept_count("built") == built + 1


@KEPT
async def test_another_accounts_comment_is_a_change_too(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    clock = Clock(glimpse.container.clock())
    glimpse.container.clock = clock
    viewer = world["people"]["viewer"]
    await _kept_page(glimpse, viewer, "ranked")
    said = await glimpse.client.post(
        f"/api/v1/posts/{world['post']}/comments",
        headers=world["people"]["other"],
        json={"text": "theirs"},
    )
    assert said.status_code == 201, said.text
    clock.now += KEPT_SECONDS
    assert (await feed(glimpse, viewer, "ranked"))["items"][0]["comment_count"] == 1
    built = kept_count("built")
    clock.now += KEPT_SECONDS
    await feed(glimpse, viewer, "ranked")
    assert kept_count("built") == built  # renewed, under the new counts


@KEPT
async def test_a_post_of_the_window_gone_unseen_is_a_change_too(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """A post off the page (its author not watched) deleted by hand, its feed entry left: the
    counts no longer find it, and the page, whose cursor would lead to it, is built again."""
    clock = Clock(glimpse.container.clock())
    glimpse.container.clock = clock
    people = world["people"]
    await quick_post(glimpse, await user_id(glimpse, people["other"]))
    await glimpse.run_jobs()
    for _ in range(3):
        page = await feed(glimpse, people["viewer"], "latest", limit=1)
    assert page["next_cursor"] is not None
    async with glimpse.container.db.write() as s:
        await s.execute(text("DELETE FROM posts WHERE id = :p"), {"p": int(world["post"])})
    clock.now += KEPT_SECONDS
    assert (await feed(glimpse, people["viewer"], "latest", limit=1))["next_cursor"] is None


@pytest.mark.parametrize("settings", [{"private_media_url_ttl_seconds": 60}], indirect=True)
async def test_renewals_end_within_half_the_time_private_media_urls_are_signed_for(
    glimpse: Glimpse,
) -> None:
    assert glimpse.container.kept_pages.renew_for == 30


@KEPT
async def test_renewed_pages_live_between_half_and_all_of_their_time_each_its_own(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    container = glimpse.container
    clock = Clock(container.clock())
    container.clock = clock
    viewer_id = await user_id(glimpse, world["people"]["viewer"])
    await feed(glimpse, world["people"]["viewer"])  # (the feed exists)

    async def build() -> kept_pages.Built:
        return kept_pages.Built(b"page", set(), {})

    for limit in range(1, 61):
        await kept_pages.first_page(container, viewer_id, "latest", limit, [], build)
    clock.now += KEPT_SECONDS
    renewed = kept_count("renewed")
    lives = []
    for limit in range(1, 61):
        await kept_pages.first_page(container, viewer_id, "latest", limit, [], build)
        kept = container.kept_pages.get((viewer_id, "latest", limit))
        assert kept is not None
        lives.append(kept.until - clock.now)
    assert kept_count("renewed") == renewed + 60
    assert all(KEPT_SECONDS / 2 <= life <= KEPT_SECONDS for life in lives), lives
    assert max(lives) - min(lives) > KEPT_SECONDS / 4, lives


Change = Callable[[Glimpse, dict[str, Any]], Awaitable[Callable[[dict[str, Any]], bool]]]


async def _own_like(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    await like(glimpse, world["people"]["viewer"], world["post"])
    return lambda page: page["items"][0]["liked_by_me"] and page["items"][0]["like_count"] == 1


async def _own_comment(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    said = await glimpse.client.post(
        f"/api/v1/posts/{world['post']}/comments",
        headers=world["people"]["viewer"],
        json={"text": "mine"},
    )
    assert said.status_code == 201, said.text
    return lambda page: page["items"][0]["comment_count"] == 1


def _gone(world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda page: all(p["id"] != world["post"] for p in page["items"])


async def _unfollow(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    await unfollow(glimpse, world["people"]["viewer"], "author")
    return _gone(world)


async def _blocked_by_author(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    await block(glimpse, world["people"]["author"], "viewer")
    return _gone(world)


async def _blocks_author(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    await block(glimpse, world["people"]["viewer"], "author")
    return _gone(world)


async def _deleted(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    gone = await glimpse.client.delete(
        f"/api/v1/posts/{world['post']}", headers=world["people"]["author"]
    )
    assert gone.status_code == 204, gone.text
    return _gone(world)


async def _renamed(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    changed = await glimpse.client.patch(
        "/api/v1/me", headers=world["people"]["author"], json={"display_name": "The Author"}
    )
    assert changed.status_code == 200, changed.text
    return lambda page: page["items"][0]["author"]["display_name"] == "The Author"


async def _private(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    await go_private(glimpse, world["people"]["author"])
    # Media only some may see is linked with signed URLs.
    return lambda page: all("sig=" in v["url"] for v in page["items"][0]["media"][0]["variants"])


async def _new_post_of_an_author_on_the_page(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    new = await publish(glimpse, world["people"]["author"], caption="newer")
    return lambda page: new["id"] in [p["id"] for p in page["items"]]


async def _new_post_fanned_out(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    # "other" has nothing on the page: its post reaches it as the feed's newest entry.
    new = await quick_post(glimpse, await user_id(glimpse, world["people"]["other"]))
    await glimpse.run_jobs()
    return lambda page: str(new) in [p["id"] for p in page["items"]]


async def _older_post_fanned_out(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    # Older than the feed's newest entry (its upload took longer to process, say): the size of
    # the feed, not its newest entry, tells.
    container, older = glimpse.container, int(world["post"]) - 1
    author_id = await user_id(glimpse, world["people"]["other"])
    async with container.db.write() as session:
        session.add(Post(id=older, author_id=author_id, status=PostStatus.READY))
        await session.flush()
        enqueue(session, container.ids, FAN_OUT_JOB, {"post_id": older}, max_attempts=5)
    await glimpse.run_jobs()
    return lambda page: str(older) in [p["id"] for p in page["items"]]


async def _new_follow(glimpse: Glimpse, world: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    starred = await quick_post(glimpse, await user_id(glimpse, world["people"]["star"]))
    await glimpse.run_jobs()
    await follow(glimpse, world["people"]["viewer"], "star")
    await glimpse.run_jobs()  # (the star's recent posts are merged into the feed by a job)
    return lambda page: str(starred) in [p["id"] for p in page["items"]]


async def _rendition_replaced(
    glimpse: Glimpse, world: dict[str, Any]
) -> Callable[[dict[str, Any]], bool]:
    # A processing job run again (or the AVIF job) replaces renditions, purging the old files:
    # a page kept from before would link files that are gone (migration 0014).
    async with glimpse.container.db.write() as s:
        await s.execute(
            text(
                "UPDATE media_variants SET key = 'elsewhere' WHERE name = 'w320' AND media_id IN"
                " (SELECT id FROM media WHERE post_id = :p)"
            ),
            {"p": int(world["post"])},
        )
    await glimpse.container.post_summaries.forget([int(world["post"])])  # (as the jobs do)
    return lambda page: any(
        "elsewhere" in v["url"] for v in page["items"][0]["media"][0]["variants"]
    )


CHANGES: dict[str, Change] = {
    "own like": _own_like,
    "own comment": _own_comment,
    "unfollow": _unfollow,
    "blocked by the author": _blocked_by_author,
    "blocks the author": _blocks_author,
    "post deleted": _deleted,
    "author renamed": _renamed,
    "author gone private": _private,
    "new post of an author on the page": _new_post_of_an_author_on_the_page,
    "new post fanned out": _new_post_fanned_out,
    "older post fanned out": _older_post_fanned_out,
    "new follow": _new_follow,
    "rendition replaced": _rendition_replaced,
}


@KEPT
@pytest.mark.parametrize("order", ["ranked", "latest"])
@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_the_page_depends_on_shows_on_the_very_next_read(
    glimpse: Glimpse, world: dict[str, Any], change: str, order: str
) -> None:
    viewer = world["people"]["viewer"]
    before = await _kept_page(glimpse, viewer, order)
    shows = await CHANGES[change](glimpse, world)
    assert not shows(before)
    served = kept_served()
    assert shows(await feed(glimpse, viewer, order))
    assert kept_served() == served  # built afresh, not served as kept


@KEPT
@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_page_built_again_for_a_new_authors_post_is_kept_from_that_build(
    glimpse: Glimpse, world: dict[str, Any], order: str
) -> None:
    """A post fanned out from an account not on the page: the page is built once, watching the
    new author's mark read before the build, and served as kept from the next read on (not
    built a second time because that author was kept at mark 0 while its mark had moved)."""
    viewer = world["people"]["viewer"]
    await _kept_page(glimpse, viewer, order)
    fresh = await publish(glimpse, world["people"]["other"], caption="new author")
    built, served = kept_count("built"), kept_served()
    page = await feed(glimpse, viewer, order)
    assert fresh["id"] in [p["id"] for p in page["items"]]
    assert (kept_count("built"), kept_served()) == (built + 1, served)
    assert await feed(glimpse, viewer, order) == page
    assert (kept_count("built"), kept_served()) == (built + 1, served + 1)


@KEPT
@pytest.mark.parametrize(
    "change", ["unfollow", "blocked by the author", "post deleted", "own like"]
)
async def test_a_change_made_through_another_process_shows_on_the_very_next_read(
    glimpse: Glimpse, settings: Settings, world: dict[str, Any], change: str
) -> None:
    viewer = world["people"]["viewer"]
    await _kept_page(glimpse, viewer, "ranked")
    async with running(settings) as elsewhere:  # (another API process)
        shows = await CHANGES[change](elsewhere, world)
    assert shows(await feed(glimpse, viewer, "ranked"))


@KEPT
async def test_a_large_accounts_new_post_shows_on_the_very_next_read(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    # The star is merged in at read time (never pushed): its mark is watched.
    people = world["people"]
    await follow(glimpse, people["viewer"], "star")
    async with glimpse.container.db.write() as s:
        await s.execute(text("UPDATE users SET feed_pull = true WHERE username = 'star'"))
    glimpse.container.viewer_memo = type(glimpse.container.viewer_memo)(ttl_seconds=600)
    await _kept_page(glimpse, people["viewer"], "latest")
    starred = await quick_post(glimpse, await user_id(glimpse, people["star"]))
    await glimpse.run_jobs()
    viewer_id = await user_id(glimpse, people["viewer"])
    window = await glimpse.container.feed_store.window(viewer_id, None, 100)
    assert window is not None and starred not in [p for p, _ in window.entries]  # not pushed
    assert (await feed(glimpse, people["viewer"], "latest"))["items"][0]["id"] == str(starred)


@pytest.mark.parametrize("settings", [{"feed_kept_page_seconds": 0}], indirect=True)
async def test_keeping_can_be_turned_off(glimpse: Glimpse, world: dict[str, Any]) -> None:
    viewer = world["people"]["viewer"]
    served, built = kept_served(), FEED_KEPT_PAGES.labels("built")._value.get()
    for _ in range(3):
        await feed(glimpse, viewer)
    assert kept_served() == served
    # Nothing kept, nor even looked at: the page is built as it was before pages were kept.
    assert FEED_KEPT_PAGES.labels("built")._value.get() == built
    assert glimpse.container.kept_pages.size_bytes == 0


@KEPT
@pytest.mark.parametrize("first", [True, False], ids=["first build", "later build"])
async def test_a_change_committed_while_the_page_is_built_is_never_served_as_kept(
    glimpse: Glimpse, world: dict[str, Any], first: bool
) -> None:
    """The marks a page is kept under are those read before it was built: a change committed
    during the build (another request's, elsewhere) must make the next read build again, not
    serve what the build saw. (Read after the build, the marks would include the change.)"""
    container = glimpse.container
    viewer = world["people"]["viewer"]
    viewer_id = await user_id(glimpse, viewer)
    author_id = await user_id(glimpse, world["people"]["author"])
    if not first:
        await feed(glimpse, viewer, "latest")  # the author is watched from now on
    pulled = await service.pulled_accounts(container, viewer_id)

    async def build_while_the_post_goes() -> kept_pages.Built:
        async with container.db.write() as s:  # (its author's mark alone moves)
            await s.execute(
                text("UPDATE posts SET status = 'failed' WHERE id = :p"), {"p": int(world["post"])}
            )
        return kept_pages.Built(b"what the build saw", {author_id})

    async def build_afresh() -> kept_pages.Built:
        return kept_pages.Built(b"afresh", {author_id})

    def first_page(build: kept_pages.Build) -> Awaitable[bytes]:
        return kept_pages.first_page(container, viewer_id, "latest", 20, pulled, build)

    assert await first_page(build_while_the_post_goes) == b"what the build saw"
    assert await first_page(build_afresh) == b"afresh"
    assert await first_page(build_afresh) == b"afresh"  # (kept now, and served)


@KEPT
async def test_each_order_and_page_size_is_a_page_of_its_own(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    viewer, post = world["people"]["viewer"], world["post"]
    await _kept_page(glimpse, viewer, "ranked")
    async with glimpse.container.db.write() as s:  # (moves no mark)
        await s.execute(text("UPDATE posts SET like_count = 7 WHERE id = :p"), {"p": int(post)})
    assert (await feed(glimpse, viewer, "ranked"))["items"][0]["like_count"] == 0  # as kept
    served = kept_served()
    assert (await feed(glimpse, viewer, "latest"))["items"][0]["like_count"] == 7
    assert (await feed(glimpse, viewer, "ranked", limit=1))["items"][0]["like_count"] == 7
    assert kept_served() == served  # each built, not the ranked page of 20 served


@KEPT
@pytest.mark.parametrize("store", ["down", "without the feed"])
async def test_a_page_is_never_served_as_kept_without_a_feed_to_watch(
    glimpse: Glimpse, world: dict[str, Any], monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    """With the feed store down, or never holding the viewer's feed, nothing tells a post
    fanned out from an account not on the page yet: each first page is built."""
    from glimpse.backends.feed import FeedStoreUnavailable

    async def window(*args: Any) -> None:
        if store == "down":
            raise FeedStoreUnavailable("the feed store does not answer")
        return None

    viewer = world["people"]["viewer"]
    monkeypatch.setattr(glimpse.container.feed_store, "window", window)
    served = kept_served()
    for _ in range(3):
        assert [p["id"] for p in (await feed(glimpse, viewer, "latest"))["items"]] == [
            world["post"]
        ]
    assert kept_served() == served
    new = await quick_post(glimpse, await user_id(glimpse, world["people"]["other"]))
    assert (await feed(glimpse, viewer, "latest"))["items"][0]["id"] == str(new)


@KEPT
async def test_kept_pages_live_between_half_and_all_of_their_time_each_its_own(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    container = glimpse.container
    viewer_id = await user_id(glimpse, world["people"]["viewer"])
    await feed(glimpse, world["people"]["viewer"])  # (the feed exists)

    async def build() -> kept_pages.Built:
        return kept_pages.Built(b"page", set())

    lives = []
    for limit in range(1, 61):
        await kept_pages.first_page(container, viewer_id, "latest", limit, [], build)
        kept = container.kept_pages.get((viewer_id, "latest", limit))
        assert kept is not None
        lives.append(kept.until - kept.kept_at)
    assert all(KEPT_SECONDS / 2 <= life <= KEPT_SECONDS for life in lives), lives
    assert max(lives) - min(lives) > KEPT_SECONDS / 4, lives  # spread, not all at once


@KEPT
async def test_a_page_served_as_kept_is_the_last_to_go_past_the_memory_bound(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    container = glimpse.container
    viewer_id = await user_id(glimpse, world["people"]["viewer"])
    author_id = await user_id(glimpse, world["people"]["author"])
    await feed(glimpse, world["people"]["viewer"])  # (the feed exists)
    size = 1000 + 400 + 112 * 2  # (body, overhead, the viewer's and the author's marks)
    container.kept_pages = kept_pages.KeptPages(KEPT_SECONDS, max_bytes=3 * size - 1)
    built: list[int] = []

    def first_page(limit: int) -> Awaitable[bytes]:
        async def build() -> kept_pages.Built:
            built.append(limit)
            return kept_pages.Built(str(limit).encode().ljust(1000), {author_id})

        return kept_pages.first_page(container, viewer_id, "latest", limit, [], build)

    for limit in (1, 2):
        await first_page(limit)
    assert container.kept_pages.size_bytes == 2 * size  # (room for two)
    await first_page(1)  # served as kept: now the most recently used
    await first_page(3)  # pushes out the least recently used: 2
    assert built == [1, 2, 3]
    await first_page(1)
    await first_page(2)
    assert built == [1, 2, 3, 2]


@KEPT
async def test_a_post_fanned_out_while_the_page_is_built_is_never_served_as_kept(
    glimpse: Glimpse, world: dict[str, Any]
) -> None:
    """The feed's state a page is kept under is, as its marks, the one read before the build:
    an entry pushed during the build (by a fan-out elsewhere) makes the next read build again."""
    container = glimpse.container
    viewer = world["people"]["viewer"]
    viewer_id = await user_id(glimpse, viewer)
    author_id = await user_id(glimpse, world["people"]["author"])
    other_id = await user_id(glimpse, world["people"]["other"])
    await feed(glimpse, viewer, "latest")  # the feed exists, and the author is watched

    async def build_while_a_post_is_fanned_out() -> kept_pages.Built:
        await quick_post(glimpse, other_id)  # (its author, not on the page, is not watched)
        await glimpse.run_jobs()
        return kept_pages.Built(b"what the build saw", {author_id})

    async def build_afresh() -> kept_pages.Built:
        return kept_pages.Built(b"afresh", {author_id})

    def first_page(build: kept_pages.Build) -> Awaitable[bytes]:
        return kept_pages.first_page(container, viewer_id, "latest", 20, [], build)

    assert await first_page(build_while_a_post_is_fanned_out) == b"what the build saw"
    assert await first_page(build_afresh) == b"afresh"
    assert await first_page(build_afresh) == b"afresh"  # (kept now, and served)
