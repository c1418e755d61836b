import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.feed.ranking import HALF_LIFE_MS, Candidate, rank_candidates, score

MINUTE_MS = 60 * 1000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
YEAR_MS = 365 * DAY_MS
NOW_MS = 1_785_000_000_000  # mid-2026

counts = st.integers(min_value=0, max_value=10**12)
affinities = st.integers(min_value=0, max_value=10**6)
# Up to a decade old: far past the point where the recency factor alone underflows a float.
ages = st.integers(min_value=0, max_value=10 * YEAR_MS)


def post(
    post_id: int = 1,
    *,
    author_id: int = 1,
    age_ms: int = 0,
    likes: int = 0,
    comments: int = 0,
) -> Candidate:
    return Candidate(
        post_id=post_id,
        author_id=author_id,
        created_ms=NOW_MS - age_ms,
        like_count=likes,
        comment_count=comments,
    )


def rank(candidates: list[Candidate], **affinity: int) -> list[Candidate]:
    """Ranks with affinity given per author as a1=..., a2=..."""
    by_author = {int(name[1:]): count for name, count in affinity.items()}
    return rank_candidates(candidates, now_ms=NOW_MS, affinity=by_author)


# Few authors, a coarse grid of ages and small counts, so that runs of one author and exact ties
# in score both turn up often.
@st.composite
def candidate_lists(draw: st.DrawFn, max_size: int = 30) -> list[Candidate]:
    post_ids = draw(
        st.lists(st.integers(1, 2**63 - 1), max_size=max_size, unique=True),
    )
    return [
        post(
            post_id,
            author_id=draw(st.integers(1, 4)),
            age_ms=draw(st.integers(-2, 72)) * HOUR_MS,
            likes=draw(st.integers(0, 6)),
            comments=draw(st.integers(0, 2)),
        )
        for post_id in post_ids
    ]


affinity_maps = st.dictionaries(st.integers(1, 4), st.integers(0, 20))


# Scores


@given(ages, st.integers(50, 10**12), counts, affinities)
def test_much_liked_post_outranks_slightly_newer_unliked_one(
    age_ms: int, likes: int, comments: int, affinity: int
) -> None:
    # The newer post gets the larger id, as it would in production, so a tie would favour it.
    liked = post(1, author_id=1, age_ms=age_ms + HOUR_MS, likes=likes, comments=comments)
    unliked = post(2, author_id=2, age_ms=age_ms)
    assert rank([unliked, liked], a1=affinity, a2=affinity) == [liked, unliked]


@given(ages, st.integers(1, DAY_MS), counts, counts, affinities)
def test_newer_post_outranks_older_one_with_equal_engagement_and_affinity(
    age_ms: int, older_by_ms: int, likes: int, comments: int, affinity: int
) -> None:
    newer = post(1, author_id=1, age_ms=age_ms, likes=likes, comments=comments)
    # The older post has the larger id, so only the score can put the newer one first.
    older = post(2, author_id=2, age_ms=age_ms + older_by_ms, likes=likes, comments=comments)
    assert rank([older, newer], a1=affinity, a2=affinity) == [newer, older]


@given(ages, counts, counts, st.integers(1, 10**12), affinities)
def test_more_likes_never_lower_the_score(
    age_ms: int, likes: int, comments: int, more: int, affinity: int
) -> None:
    fewer = score(
        post(age_ms=age_ms, likes=likes, comments=comments), now_ms=NOW_MS, affinity=affinity
    )
    most = score(
        post(age_ms=age_ms, likes=likes + more, comments=comments), now_ms=NOW_MS, affinity=affinity
    )
    assert most >= fewer


@given(ages, counts, counts, st.integers(1, 10**12), affinities)
def test_more_comments_never_lower_the_score(
    age_ms: int, likes: int, comments: int, more: int, affinity: int
) -> None:
    fewer = score(
        post(age_ms=age_ms, likes=likes, comments=comments), now_ms=NOW_MS, affinity=affinity
    )
    most = score(
        post(age_ms=age_ms, likes=likes, comments=comments + more), now_ms=NOW_MS, affinity=affinity
    )
    assert most >= fewer


@given(ages, counts, counts, affinities, st.integers(1, 10**12))
def test_more_affinity_never_lowers_the_score(
    age_ms: int, likes: int, comments: int, affinity: int, more: int
) -> None:
    candidate = post(age_ms=age_ms, likes=likes, comments=comments)
    assert score(candidate, now_ms=NOW_MS, affinity=affinity + more) >= score(
        candidate, now_ms=NOW_MS, affinity=affinity
    )


@given(st.integers(-DAY_MS, 10 * YEAR_MS), st.integers(1, YEAR_MS), counts, counts, affinities)
def test_older_post_never_scores_higher(
    age_ms: int, older_by_ms: int, likes: int, comments: int, affinity: int
) -> None:
    newer = post(age_ms=age_ms, likes=likes, comments=comments)
    older = post(age_ms=age_ms + older_by_ms, likes=likes, comments=comments)
    assert score(older, now_ms=NOW_MS, affinity=affinity) <= score(
        newer, now_ms=NOW_MS, affinity=affinity
    )


@given(
    st.integers(-YEAR_MS, 200 * YEAR_MS),
    st.integers(0, 10**30),
    st.integers(0, 10**30),
    st.integers(0, 10**30),
)
def test_score_is_finite_and_positive_for_huge_counts_and_ancient_posts(
    age_ms: int, likes: int, comments: int, affinity: int
) -> None:
    value = score(
        post(age_ms=age_ms, likes=likes, comments=comments), now_ms=NOW_MS, affinity=affinity
    )
    assert math.isfinite(value)
    assert value > 0


def test_years_old_posts_keep_their_order() -> None:
    # Both recency factors underflow to 0.0 as plain floats; ids against the order, so a tie fails.
    older_unliked = post(3, author_id=1, age_ms=5 * YEAR_MS + HOUR_MS)
    liked = post(2, author_id=2, age_ms=5 * YEAR_MS + HOUR_MS, likes=10)
    newer_unliked = post(1, author_id=3, age_ms=5 * YEAR_MS)
    assert rank([older_unliked, newer_unliked, liked]) == [liked, newer_unliked, older_unliked]


def test_post_from_the_future_counts_as_brand_new() -> None:
    # Clock skew between servers must not pin a post to the top of every feed.
    skewed = post(age_ms=-HOUR_MS, likes=3)
    fresh = post(age_ms=0, likes=3)
    assert score(skewed, now_ms=NOW_MS, affinity=2) == score(fresh, now_ms=NOW_MS, affinity=2)


def test_score_halves_every_half_life() -> None:
    fresh = score(post(age_ms=0, likes=7), now_ms=NOW_MS, affinity=1)
    day_old = score(post(age_ms=HALF_LIFE_MS, likes=7), now_ms=NOW_MS, affinity=1)
    assert HALF_LIFE_MS == DAY_MS
    assert day_old == pytest.approx(fresh / 2)


def test_unengaged_post_from_an_unknown_author_scores_one_when_new() -> None:
    assert score(post(), now_ms=NOW_MS, affinity=0) == pytest.approx(1.0)


def test_a_comment_counts_for_more_than_a_like() -> None:
    commented = score(post(comments=1), now_ms=NOW_MS, affinity=0)
    liked = score(post(likes=1), now_ms=NOW_MS, affinity=0)
    assert commented > liked


def test_close_friends_post_outranks_an_equal_post_from_a_stranger() -> None:
    stranger = post(2, author_id=2, likes=4)
    friend = post(1, author_id=1, likes=4)
    assert rank([stranger, friend], a1=10) == [friend, stranger]


def test_affinity_boost_is_bounded_so_a_friends_stale_post_loses_to_a_fresh_one() -> None:
    friends_stale = post(1, author_id=1, age_ms=2 * DAY_MS, likes=5)
    strangers_fresh = post(2, author_id=2, likes=5)
    assert rank([friends_stale, strangers_fresh], a1=10**12) == [strangers_fresh, friends_stale]


def test_missing_affinity_counts_as_zero() -> None:
    newer = post(1, author_id=1, likes=2)
    older = post(2, author_id=2, likes=2, age_ms=MINUTE_MS)
    # One author listed with 0 and the other not listed at all: equal affinity, so newer first.
    assert rank([newer, older], a2=0) == [newer, older]
    assert rank([newer, older], a1=0) == [newer, older]


@pytest.mark.parametrize(
    ("candidate", "affinity"),
    [(post(likes=-1), 0), (post(comments=-1), 0), (post(), -1)],
)
def test_negative_counts_are_rejected(candidate: Candidate, affinity: int) -> None:
    with pytest.raises(ValueError):
        score(candidate, now_ms=NOW_MS, affinity=affinity)
    with pytest.raises(ValueError):
        rank_candidates([candidate], now_ms=NOW_MS, affinity={candidate.author_id: affinity})


# Ranking


def test_empty_input_gives_an_empty_feed() -> None:
    assert rank_candidates([], now_ms=NOW_MS, affinity={}) == []


@given(candidate_lists(), affinity_maps, st.integers(1, 4))
def test_ranking_is_a_permutation_of_the_candidates(
    candidates: list[Candidate], affinity: dict[int, int], max_run: int
) -> None:
    ranked = rank_candidates(candidates, now_ms=NOW_MS, affinity=affinity, max_run=max_run)
    assert Counter(ranked) == Counter(candidates)


@given(candidate_lists(), affinity_maps, st.integers(1, 4), st.randoms(use_true_random=False))
def test_ranking_does_not_depend_on_input_order(
    candidates: list[Candidate], affinity: dict[int, int], max_run: int, rng: random.Random
) -> None:
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    first = rank_candidates(candidates, now_ms=NOW_MS, affinity=affinity, max_run=max_run)
    again = rank_candidates(shuffled, now_ms=NOW_MS, affinity=affinity, max_run=max_run)
    assert again == first


def test_equal_scores_are_ordered_newest_post_id_first() -> None:
    twins = [post(post_id, author_id=post_id, likes=2, age_ms=HOUR_MS) for post_id in (5, 9, 1, 7)]
    assert [c.post_id for c in rank(twins)] == [9, 7, 5, 1]


@given(candidate_lists(), affinity_maps)
def test_without_a_run_to_break_the_feed_is_in_score_order(
    candidates: list[Candidate], affinity: dict[int, int]
) -> None:
    ranked = rank_candidates(
        candidates, now_ms=NOW_MS, affinity=affinity, max_run=max(1, len(candidates))
    )
    scores = [score(c, now_ms=NOW_MS, affinity=affinity.get(c.author_id, 0)) for c in ranked]
    assert scores == sorted(scores, reverse=True)


@given(candidate_lists(), affinity_maps, st.integers(1, 4))
def test_no_author_runs_longer_than_max_run_while_others_remain(
    candidates: list[Candidate], affinity: dict[int, int], max_run: int
) -> None:
    ranked = rank_candidates(candidates, now_ms=NOW_MS, affinity=affinity, max_run=max_run)
    for end in range(max_run, len(ranked)):
        window = {c.author_id for c in ranked[end - max_run : end + 1]}
        if len(window) == 1:
            # A run one too long is only allowed once nobody else is left.
            assert {c.author_id for c in ranked[end:]} == window


@given(candidate_lists(), affinity_maps, st.integers(1, 4))
def test_diversity_pass_takes_the_best_candidate_that_keeps_the_run_short(
    candidates: list[Candidate], affinity: dict[int, int], max_run: int
) -> None:
    # The plain greedy rule, quadratic, over the order the ranking gives when no run can break.
    remaining = rank_candidates(
        candidates, now_ms=NOW_MS, affinity=affinity, max_run=max(1, len(candidates))
    )
    expected: list[Candidate] = []
    while remaining:
        tail = expected[-max_run:]
        blocked = (
            tail[0].author_id
            if len(tail) == max_run and len({c.author_id for c in tail}) == 1
            else None
        )
        allowed = [c for c in remaining if c.author_id != blocked] or remaining
        expected.append(allowed[0])
        remaining.remove(allowed[0])
    assert rank_candidates(candidates, now_ms=NOW_MS, affinity=affinity, max_run=max_run) == (
        expected
    )


def test_prolific_author_is_interleaved_with_others() -> None:
    prolific = [post(100 + i, author_id=1, likes=50, age_ms=i * MINUTE_MS) for i in range(5)]
    others = [post(10 + i, author_id=2 + i, age_ms=i * MINUTE_MS) for i in range(2)]
    ranked = rank(prolific + others)
    assert [c.author_id for c in ranked] == [1, 1, 2, 1, 1, 3, 1]
    # Within one author the order is still by score.
    assert [c.post_id for c in ranked if c.author_id == 1] == [100, 101, 102, 103, 104]


def test_when_only_one_author_is_left_the_rest_follow_in_score_order() -> None:
    prolific = [post(100 + i, author_id=1, likes=50, age_ms=i * MINUTE_MS) for i in range(5)]
    other = post(10, author_id=2)
    assert rank([*prolific, other]) == [*prolific[:2], other, *prolific[2:]]


def test_max_run_of_one_alternates_authors() -> None:
    a = [post(100 + i, author_id=1, likes=50, age_ms=i * MINUTE_MS) for i in range(3)]
    b = [post(10 + i, author_id=2, age_ms=i * MINUTE_MS) for i in range(3)]
    ranked = rank_candidates(a + b, now_ms=NOW_MS, affinity={}, max_run=1)
    assert [c.author_id for c in ranked] == [1, 2, 1, 2, 1, 2]


def test_max_run_must_be_positive() -> None:
    with pytest.raises(ValueError):
        rank_candidates([post()], now_ms=NOW_MS, affinity={}, max_run=0)
