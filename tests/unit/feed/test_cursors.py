"""Feed cursor positions as plain values: packing, round trips, the size limit, and refusal of
anything to_cursor_fields could not have made."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.feed.cursors import (
    WINDOW,
    FeedPosition,
    from_cursor_fields,
    pack_ids,
    to_cursor_fields,
    unpack_ids,
)
from glimpse.pagination import decode_cursor, encode_cursor

ids = st.integers(min_value=0, max_value=2**63 - 1)


@given(st.lists(ids, max_size=WINDOW))
def test_packed_ids_round_trip_in_order(values: list[int]) -> None:
    assert unpack_ids(pack_ids(values)) == values


@given(st.lists(ids, max_size=WINDOW), st.none() | ids, st.booleans())
def test_a_ranked_position_round_trips_through_a_signed_cursor(
    pending: list[int], floor: int | None, more: bool
) -> None:
    position = FeedPosition(order="ranked", pending=tuple(pending), floor=floor, more=more)
    cursor = encode_cursor(b"secret", "feed", to_cursor_fields(position))
    assert from_cursor_fields(decode_cursor(b"secret", "feed", cursor)) == position


@given(ids)
def test_a_latest_position_round_trips(before: int) -> None:
    position = FeedPosition(order="latest", before=before)
    assert from_cursor_fields(to_cursor_fields(position)) == position


def test_a_whole_window_of_the_largest_ids_fits_in_a_cursor() -> None:
    # encode_cursor refuses positions past its size limit: a full window must never be one.
    position = FeedPosition(order="ranked", pending=(2**63 - 1,) * WINDOW, floor=2**63 - 1)
    cursor = encode_cursor(b"secret", "feed", to_cursor_fields(position))
    assert from_cursor_fields(decode_cursor(b"secret", "feed", cursor)) == position


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"o": "x"},
        {"o": "l"},
        {"o": "l", "b": -1},
        {"o": "l", "b": True},
        {"o": "l", "b": "12"},
        {"o": "l", "b": 2**63},
        {"o": "r", "p": "", "f": None},
        {"o": "r", "p": "", "f": None, "m": 2},
        {"o": "r", "p": "", "f": None, "m": True},
        {"o": "r", "p": "", "f": -5, "m": 1},
        {"o": "r", "p": 7, "f": None, "m": 1},
        {"o": "r", "p": "AAAA", "f": None, "m": 1},  # 3 bytes: no whole id
        {"o": "r", "p": "!!!!", "f": None, "m": 1},
        {"o": "r", "p": pack_ids([-1]), "f": None, "m": 1},
        {"o": "r", "p": pack_ids([1] * (WINDOW + 1)), "f": None, "m": 1},
    ],
)
def test_fields_no_cursor_of_ours_holds_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        from_cursor_fields(fields)
