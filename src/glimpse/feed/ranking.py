"""Home-feed ranking: a score per candidate post, then a re-rank for author diversity.

Plain functions over plain values: the feed service loads the candidates and the viewer's
affinities, this module only orders them, so the rules can be property-tested without a database.

    score          = recency * engagement * affinity_boost
    recency        = 2 ** (-age / HALF_LIFE_MS)        age = now - created, floored at 0
    engagement     = ln(e + likes + COMMENT_WEIGHT * comments)
    affinity_boost = 1 + AFFINITY_MAX_EXTRA * a / (a + AFFINITY_HALF_SATURATION)

Each factor is 1 for a post with nothing going for it (brand new, no likes, unknown author), so
the three trade against one another in one currency, half-lives: a factor of 2 is worth one
day of age. With the constants below the first like is worth about 9 hours, 50 likes about 48,
500 likes 63, 5,000 likes 74 (diminishing returns); five recent interactions with the author
are worth 14 hours, any number of them at most 24.

Posts are ordered by the natural log of the score, a sum of three finite terms. Recency alone
is 2 ** -365 for a year-old post and underflows to 0.0 after about 1,000 days, past which every
old post would tie; its log, -ln 2 * age / HALF_LIFE_MS, does not. `score` returns the
exponential of that sum, floored at the smallest normal float so it stays positive; for posts
that old only the order of `rank_candidates` is exact.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Mapping, Sequence
from heapq import heapify, heappop, heappush, heapreplace
from typing import NamedTuple

__all__ = ["Candidate", "rank_candidates", "score"]

# People open a photo app about once a day, so a day is the natural unit: yesterday's post is
# worth half of one posted now, and a week-old one (1/128) only fills a feed with nothing newer.
HALF_LIFE_MS = 24 * 60 * 60 * 1000

# A comment takes far more effort than a tap on the heart, so it is the stronger sign that a post
# is worth seeing (EdgeRank weighted them the same way). An integer, so the sum stays exact.
COMMENT_WEIGHT = 3

# The viewer's own interactions with an author at most double a post's score (one half-life):
# enough to lift friends above acquaintances, bounded so that one close friend cannot fill the
# feed and the posts of a newly followed author, with no history yet, still get seen.
AFFINITY_MAX_EXTRA = 1.0
# Five recent likes or comments earn half of that extra; returns diminish after.
AFFINITY_HALF_SATURATION = 5

# Counters are BIGINT columns, so this is never reached from the database; it only keeps the
# conversion to float finite for any Python int.
_MAX_COUNT = 2**63 - 1
_LN2 = math.log(2)
_SMALLEST_SCORE = sys.float_info.min


class Candidate(NamedTuple):
    """A post that may appear in a viewer's home feed, with what ranking needs to know of it.
    (A named tuple: a read ranks a window of them per request, and a frozen dataclass costs
    three times as much to make.)"""

    post_id: int  # 64-bit time-sortable id; larger = newer
    author_id: int
    created_ms: int  # unix milliseconds at which the post was created
    like_count: int
    comment_count: int


def _log_score(candidate: Candidate, now_ms: int, affinity: int) -> float:
    if candidate.like_count < 0 or candidate.comment_count < 0 or affinity < 0:
        raise ValueError(
            f"counts must be non-negative, got {candidate.like_count} likes, "
            f"{candidate.comment_count} comments, affinity {affinity} (post {candidate.post_id})"
        )
    # A post stamped in the future is clock skew between servers, not a reason to pin it on top.
    age_ms = max(0, now_ms - candidate.created_ms)
    # Integer true division is correctly rounded, and so monotonic, for ints of any size.
    recency = -_LN2 * (age_ms / HALF_LIFE_MS)
    weighted = min(candidate.like_count + COMMENT_WEIGHT * candidate.comment_count, _MAX_COUNT)
    # ln(e + x) rather than ln(1 + x) so that an unliked post has a factor of 1, not 0: a new
    # post has no likes yet and must still be seen.
    engagement = math.log(math.log(math.e + weighted))
    boost = math.log1p(AFFINITY_MAX_EXTRA * (affinity / (affinity + AFFINITY_HALF_SATURATION)))
    return recency + engagement + boost


def score(candidate: Candidate, *, now_ms: int, affinity: int) -> float:
    """How much the viewer should want to see this post now; larger is better.

    `affinity` is how many times the viewer recently liked or commented on the author's posts.
    Raises ValueError on a negative count.
    """
    return max(math.exp(_log_score(candidate, now_ms, affinity)), _SMALLEST_SCORE)


def rank_candidates(
    candidates: Sequence[Candidate],
    *,
    now_ms: int,
    affinity: Mapping[int, int],
    max_run: int = 2,
) -> list[Candidate]:
    """The candidates in feed order: best score first, no author more than `max_run` in a row.

    `affinity` maps author ids to the viewer's recent interaction count (missing is 0). Equal
    scores go newest post id first. Where the next best post would make its author's run too
    long, the best post of another author goes first; once only that author is left, the rest
    of its posts follow in score order. The result never depends on the order of the input.
    """
    if max_run < 1:
        raise ValueError(f"max_run must be at least 1, got {max_run}")

    # sorted() calls the key once per candidate, so each score is computed once. The fields after
    # post_id only matter for duplicate ids; they keep the order independent of the input's.
    def sort_key(c: Candidate) -> tuple[float, int, int, int, int, int]:
        log_score = _log_score(c, now_ms, affinity.get(c.author_id, 0))
        return (-log_score, -c.post_id, c.author_id, c.created_ms, c.like_count, c.comment_count)

    ordered = sorted(candidates, key=sort_key)
    if len(ordered) <= max_run:
        return ordered

    # From here a post is its position in `ordered`, so a smaller number is a better post. Each
    # author's posts queue up best first; the heap holds the head of every non-empty queue, so its
    # top is the best remaining post and its second best the best of another author.
    queues: dict[int, deque[int]] = {}
    for position, candidate in enumerate(ordered):
        queues.setdefault(candidate.author_id, deque()).append(position)
    heads = [queue[0] for queue in queues.values()]
    heapify(heads)

    ranked: list[Candidate] = []
    run_author, run_length = None, 0
    while heads:
        best = heappop(heads)
        author = ordered[best].author_id
        if author == run_author and run_length >= max_run and heads:
            # Take the best post of another author and put this author's head back.
            best = heapreplace(heads, best)
            author = ordered[best].author_id
        ranked.append(ordered[best])
        queue = queues[author]
        queue.popleft()
        if queue:
            heappush(heads, queue[0])
        if author == run_author:
            run_length += 1
        else:
            run_author, run_length = author, 1
    return ranked
