"""A story's lifetime and the tray's order, as plain functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.errors import Invalid
from glimpse.stories.lifetime import expiry_of, is_live, media_shown, url_deadline
from glimpse.stories.repository import StoryRow
from glimpse.stories.service import arrange_tray, check_title, parse_story_ids

T0 = datetime(2026, 12, 4, 12, 0, 0, 250_000, tzinfo=UTC)


def test_a_story_expires_ttl_seconds_after_it_was_made() -> None:
    assert expiry_of(T0, 86_400) == T0 + timedelta(days=1)


@given(st.integers(min_value=1, max_value=10**7), st.integers(min_value=-(10**6), max_value=10**6))
def test_live_exactly_until_its_expiry(ttl: int, offset_us: int) -> None:
    expires = expiry_of(T0, ttl)
    now = expires + timedelta(microseconds=offset_us)
    assert is_live(expires, now) is (offset_us < 0)


def test_media_is_linked_while_live_or_held() -> None:
    expires = T0
    before, at = T0 - timedelta(seconds=1), T0
    assert media_shown(expires, before, held=False)
    assert not media_shown(expires, at, held=False)
    assert media_shown(expires, at, held=True)


def test_urls_die_with_the_story_unless_a_highlight_holds_it() -> None:
    # Rounded down: a URL never outlives the story, even by a fraction of a second.
    assert url_deadline(T0, held=False) == int(T0.timestamp())
    assert url_deadline(T0, held=False) <= T0.timestamp()
    assert url_deadline(T0, held=True) is None


def _story(story_id: int, author_id: int, minute: int) -> StoryRow:
    made = T0 + timedelta(minutes=minute)
    return StoryRow(story_id, author_id, "ready", None, None, made, made + timedelta(days=1))


def test_the_tray_puts_unseen_first_then_the_latest_story() -> None:
    rows = [
        (_story(1, 10, 0), True),
        (_story(2, 20, 1), False),
        (_story(3, 30, 2), True),
        (_story(4, 10, 3), False),  # account 10: one seen, one not: unseen
        (_story(5, 30, 4), True),
    ]
    entries = arrange_tray(rows)
    assert [e.author_id for e in entries] == [10, 20, 30]
    assert [e.has_unseen for e in entries] == [True, True, False]
    assert [s.id for s in entries[0].stories] == [1, 4]  # oldest first within an account
    assert entries[0].latest_at == T0 + timedelta(minutes=3)


@given(
    st.lists(
        st.tuples(st.integers(1, 6), st.integers(0, 500), st.booleans()),
        unique_by=lambda t: t[1],
        max_size=30,
    )
)
def test_the_tray_order_holds_for_any_stories(stories: list[tuple[int, int, bool]]) -> None:
    rows = [(_story(minute + 1, author, minute), seen) for author, minute, seen in stories]
    entries = arrange_tray(rows)
    assert sorted(s.id for e in entries for s in e.stories) == sorted(r[0].id for r in rows)
    assert len({e.author_id for e in entries}) == len(entries)
    keys = [(not e.has_unseen, -e.latest_at.timestamp()) for e in entries]
    assert keys == sorted(keys)
    for entry in entries:
        ids = [s.id for s in entry.stories]
        assert ids == sorted(ids)
        assert entry.has_unseen == any(
            not seen for story, seen in rows if story.author_id == entry.author_id
        )


def test_story_ids_are_parsed_and_bounded() -> None:
    assert parse_story_ids(["12", 7, "12"]) == [12, 7]
    for bad in ([], ["x"], ["-1"], [-1], [2**63], ["1" * 20], ["\u0661"]):
        with pytest.raises(Invalid):
            parse_story_ids(bad)
    with pytest.raises(Invalid):
        parse_story_ids(list(range(101)))
    assert len(parse_story_ids(list(range(100)))) == 100


def test_titles_are_one_clean_line() -> None:
    assert check_title("  Summer  ") == "Summer"
    for bad in ("", "   ", "a" * 65, "two\nlines", "bidi\u202e"):
        with pytest.raises(Invalid):
            check_title(bad)


def test_workers_check_periodic_jobs_as_often_as_the_reaper_is_due() -> None:
    # Checked once a minute, a job due every 20 s ran once a minute (the attack run saw it).
    import glimpse.stories.jobs  # noqa: F401  (registers the reaper)
    from glimpse.stories.jobs import REAP_EVERY_SECONDS
    from glimpse.worker import periodic_check_seconds

    assert periodic_check_seconds() == REAP_EVERY_SECONDS
