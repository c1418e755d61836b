"""Kept first pages under attack (feed/kept_pages.py): what a kept page must not keep serving,
and what it must not hold on to."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from glimpse.feed.memo import ViewerMemo
from tests.api.social import feed, follow, quick_post, user_id
from tests.api.test_kept_pages import KEPT, _kept_page, kept_served
from tests.conftest import Glimpse


@KEPT
@pytest.mark.parametrize("order", ["ranked", "latest"])
async def test_a_new_follow_of_a_large_account_shows_once_the_memo_knows_it(
    glimpse: Glimpse, order: str
) -> None:
    """The large accounts a viewer follows are remembered for feed_viewer_memo_seconds: a new
    follow of one shows once that memo is read again (README), not a kept page's time later.
    (The follow moves the viewer's mark, but the page built at the next read still merges the
    accounts remembered before it; once the memo knows the new one, the kept page must go.)"""
    viewer = await glimpse.signup("viewer")
    other = await glimpse.signup("other")
    star = await glimpse.signup("star")
    await follow(glimpse, viewer, "other")
    await quick_post(glimpse, await user_id(glimpse, other))
    async with glimpse.container.db.write() as s:
        await s.execute(text("UPDATE users SET feed_pull = true WHERE username = 'star'"))
    starred = await quick_post(glimpse, await user_id(glimpse, star))
    await glimpse.run_jobs()
    glimpse.container.viewer_memo = ViewerMemo(ttl_seconds=600)
    await _kept_page(glimpse, viewer, order)  # the memo: no large account followed
    await follow(glimpse, viewer, "star")
    await glimpse.run_jobs()
    page = await feed(glimpse, viewer, order)  # built again (the viewer's mark moved)...
    assert str(starred) not in [p["id"] for p in page["items"]]  # ...with the memo's accounts
    glimpse.container.viewer_memo = ViewerMemo(ttl_seconds=600)  # the memo's time is up
    page = await feed(glimpse, viewer, order)
    assert str(starred) in [p["id"] for p in page["items"]]


@KEPT
async def test_the_marks_a_page_is_kept_under_do_not_grow_with_every_author_ever_shown(
    glimpse: Glimpse,
) -> None:
    """Each build watches the accounts it must (the viewer, the large accounts followed, the
    authors on the page), not every account any earlier page of the same key showed: else the
    kept entry and the IN list read at every first page grow without bound as the feed turns
    over (past the database's bound-parameter limit, every first page of that viewer fails)."""
    viewer = await glimpse.signup("viewer")
    viewer_id = await user_id(glimpse, viewer)
    for n in range(12):
        author = await glimpse.signup(f"author{n}")
        await follow(glimpse, viewer, f"author{n}")
        await quick_post(glimpse, await user_id(glimpse, author))
        await glimpse.run_jobs()
        await feed(glimpse, viewer, "latest", limit=1)
        await feed(glimpse, viewer, "latest", limit=1)
    kept = glimpse.container.kept_pages.get((viewer_id, "latest", 1))
    assert kept is not None
    # The viewer and the one author on the page.
    assert len(kept.marks) <= 2, sorted(kept.marks)
    served = kept_served()
    await feed(glimpse, viewer, "latest", limit=1)
    assert kept_served() == served + 1
