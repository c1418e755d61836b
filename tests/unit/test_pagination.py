"""Signed, opaque cursors and page-size rules (pagination.py)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from glimpse.errors import Invalid, Malformed
from glimpse.pagination import (
    DEFAULT_LIMIT,
    MAX_CURSOR_CHARS,
    MAX_LIMIT,
    check_limit,
    decode_cursor,
    encode_cursor,
)

SECRET = b"test-secret"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
positions = st.dictionaries(
    st.text(max_size=12).filter(lambda k: k != "k"), json_values, max_size=5
)


def _flip(text: str, index: int) -> str:
    replacement = "A" if text[index] != "A" else "B"
    return text[:index] + replacement + text[index + 1 :]


def test_cursor_round_trips() -> None:
    cursor = encode_cursor(SECRET, "user_posts", {"before": 123456789, "score": 0.5})
    assert decode_cursor(SECRET, "user_posts", cursor) == {"before": 123456789, "score": 0.5}


@given(positions)
def test_any_json_position_round_trips(position: dict[str, Any]) -> None:
    try:
        cursor = encode_cursor(SECRET, "feed", position)
    except ValueError:
        # Only a position too large for a cursor is refused, never a small one.
        assert len(json.dumps(position)) > MAX_CURSOR_CHARS // 2
        return
    assert cursor.isascii() and " " not in cursor  # safe in a query string
    assert decode_cursor(SECRET, "feed", cursor) == position


def test_cursor_with_an_edited_body_is_refused() -> None:
    cursor = encode_cursor(SECRET, "user_posts", {"before": 100})
    body, sig = cursor.split(".")
    forged_body = base64.urlsafe_b64encode(b'{"before":999999,"k":"user_posts"}').rstrip(b"=")
    for tampered in (f"{forged_body.decode()}.{sig}", f"{_flip(body, 3)}.{sig}"):
        with pytest.raises(Malformed) as caught:
            decode_cursor(SECRET, "user_posts", tampered)
        assert caught.value.code == "invalid_cursor"


def test_cursor_with_an_edited_signature_is_refused() -> None:
    cursor = encode_cursor(SECRET, "user_posts", {"before": 100})
    body, sig = cursor.split(".")
    for tampered in (f"{body}.{_flip(sig, 0)}", f"{body}.", f"{body}.{sig[:-2]}"):
        with pytest.raises(Malformed):
            decode_cursor(SECRET, "user_posts", tampered)


def test_cursor_signed_with_another_secret_is_refused() -> None:
    cursor = encode_cursor(b"another server", "user_posts", {"before": 100})
    with pytest.raises(Malformed):
        decode_cursor(SECRET, "user_posts", cursor)


def test_cursor_of_one_list_is_refused_by_another() -> None:
    cursor = encode_cursor(SECRET, "user_posts", {"before": 100})
    with pytest.raises(Malformed):
        decode_cursor(SECRET, "feed", cursor)


def test_position_cannot_make_a_cursor_pass_for_another_list() -> None:
    # A position field named like the kind marker must not relabel the cursor.
    try:
        cursor = encode_cursor(SECRET, "user_posts", {"k": "feed", "before": 100})
    except ValueError:
        return  # refusing such a position is fine too
    with pytest.raises(Malformed):
        decode_cursor(SECRET, "feed", cursor)


@pytest.mark.parametrize(
    "garbage",
    ["", ".", "..", "abc", "a.b.c", "!!!.???", "é.ü", "AAAA.AAAA", "A.A", "\x00.\x00", "=.="],
)
def test_garbage_cursor_is_refused_cleanly(garbage: str) -> None:
    with pytest.raises(Malformed):
        decode_cursor(SECRET, "user_posts", garbage)


@given(st.text(max_size=200))
def test_any_text_either_decodes_or_is_refused_as_malformed(text: str) -> None:
    # Random text cannot carry this server's signature: refused, and refused as Malformed.
    with pytest.raises(Malformed):
        decode_cursor(SECRET, "user_posts", text)


@given(
    st.integers(min_value=0, max_value=10_000),
    st.data(),
)
def test_edited_cursor_decodes_to_the_original_or_is_refused(
    before: int, data: st.DataObject
) -> None:
    original = {"before": before}
    cursor = encode_cursor(SECRET, "user_posts", original)
    index = data.draw(st.integers(min_value=0, max_value=len(cursor)))
    inserted = data.draw(st.text(max_size=3))
    removed = data.draw(st.integers(min_value=0, max_value=3))
    edited = cursor[:index] + inserted + cursor[index + removed :]
    try:
        decoded = decode_cursor(SECRET, "user_posts", edited)
    except Malformed:
        return
    assert decoded == original


def test_limit_defaults_and_bounds() -> None:
    assert check_limit(None) == DEFAULT_LIMIT
    assert check_limit(1) == 1
    assert check_limit(MAX_LIMIT) == MAX_LIMIT == 100


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1, 10**9])
def test_limit_out_of_bounds_is_invalid(limit: int) -> None:
    with pytest.raises(Invalid) as caught:
        check_limit(limit)
    assert caught.value.code == "invalid_limit"


def test_a_keyset_cursor_whose_key_is_no_id_is_refused() -> None:
    from glimpse.pagination import decode_keyset, encode_keyset

    assert decode_keyset(b"k", "followers", encode_keyset(b"k", "followers", 5, "ann"), "ann") == 5
    for before in (True, "5", 1.5, None):
        cursor = encode_cursor(b"k", "followers", {"before": before, "of": "ann"})
        with pytest.raises(Malformed):
            decode_keyset(b"k", "followers", cursor, "ann")
