"""Opaque, signed cursors and page-size rules shared by every list (API.md, Pagination).

A cursor is base64url(JSON) plus an HMAC: clients cannot forge or edit one, and a broken one is a
clean 400 instead of a query with attacker-chosen bounds.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from glimpse.errors import Invalid, Malformed
from glimpse.signing import b64, signature, signature_matches

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_SIG_BYTES = 12
MAX_CURSOR_CHARS = 1024


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_cursor(secret: bytes, kind: str, position: dict[str, Any]) -> str:
    """`kind` names the list, so a cursor from one list is refused by another."""
    if "k" in position:
        raise ValueError("'k' is reserved for the list's name")
    body = json.dumps({"k": kind, **position}, separators=(",", ":"), sort_keys=True).encode()
    cursor = f"{b64(body)}.{signature(secret, body, _SIG_BYTES)}"
    if len(cursor) > MAX_CURSOR_CHARS:  # never issue a cursor that decode_cursor would refuse
        raise ValueError("cursor position too large")
    return cursor


def decode_cursor(secret: bytes, kind: str, cursor: str) -> dict[str, Any]:
    bad = Malformed("The cursor is not one this server issued.", code="invalid_cursor")
    if len(cursor) > MAX_CURSOR_CHARS:
        raise bad
    try:
        body_text, sig_text = cursor.split(".")
        body = _unb64(body_text)
    except (ValueError, binascii.Error):
        raise bad from None
    if not signature_matches(secret, body, sig_text, _SIG_BYTES):
        raise bad
    try:
        position = json.loads(body)
    except ValueError:
        raise bad from None
    if not isinstance(position, dict) or position.pop("k", None) != kind:
        raise bad
    return position


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"limit must be between 1 and {MAX_LIMIT}.", code="invalid_limit")
    return limit


def encode_keyset(secret: bytes, kind: str, before: int, of: str = "") -> str:
    """The cursor of a newest-first list that continues below `before`. `of` names whose list
    it is (a username), so that one account's cursor is refused by another's list."""
    return encode_cursor(secret, kind, {"before": before, "of": of})


def decode_keyset(secret: bytes, kind: str, cursor: str | None, of: str = "") -> int | None:
    """The `before` key of a newest-first list's cursor (None for the first page)."""
    if not cursor:
        return None
    position = decode_cursor(secret, kind, cursor)
    before = position.get("before")
    if not isinstance(before, int) or isinstance(before, bool) or position.get("of") != of:
        raise Malformed(
            "The cursor is not one this server issued for this list.", code="invalid_cursor"
        )
    return before
