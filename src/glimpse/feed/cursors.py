"""Where a walk through the home feed stands, as the plain values its cursor carries.

A ranked walk ranks one window of candidates at a time (the next WINDOW newest below the
previous window) and pins that order: the cursor carries the window's unserved post ids in their
ranked order, and the floor below which the next window starts. Likes and new posts during the
walk change nothing already pinned, and new posts are above every floor, so a walk never repeats
a post and never skips one that was in the feed when it began. The ids travel packed (8 bytes
each, base64url) so that a full window fits the cursor's size limit (pagination.py).
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Order = Literal["ranked", "latest"]

# Candidates ranked together. Large enough for ranking to matter (a much-liked post rises past
# three pages of newer ones), small enough that its unserved ids fit in a cursor.
WINDOW = 64
_MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class FeedPosition:
    order: Order
    # ranked: unserved ids of the current window, in their pinned order; the next window takes
    # candidates below `floor` (None: from the top); `more`: whether any may be left there.
    pending: Sequence[int] = field(default_factory=tuple)
    floor: int | None = None
    more: bool = True
    # latest: the next page takes posts below this id.
    before: int | None = None


def pack_ids(ids: Sequence[int]) -> str:
    return base64.urlsafe_b64encode(struct.pack(f">{len(ids)}q", *ids)).decode().rstrip("=")


def unpack_ids(text: str) -> list[int]:
    """ValueError for anything pack_ids could not have made."""
    try:
        # validate=True: characters outside the alphabet are an error, not skipped.
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc
    if len(raw) % 8:
        raise ValueError("not a whole number of ids")
    ids = list(struct.unpack(f">{len(raw) // 8}q", raw))
    if any(i < 0 for i in ids):
        raise ValueError("negative id")
    return ids


def to_cursor_fields(position: FeedPosition) -> dict[str, Any]:
    if position.order == "latest":
        return {"o": "l", "b": position.before}
    return {
        "o": "r",
        "p": pack_ids(position.pending),
        "f": position.floor,
        "m": 1 if position.more else 0,
    }


def from_cursor_fields(fields: dict[str, Any]) -> FeedPosition:
    """The position a (signature-checked) cursor holds; ValueError if its fields are not ones
    to_cursor_fields makes."""

    def bound(value: Any) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_ID:
            raise ValueError("not an id")
        return value

    order = fields.get("o")
    if order == "l":
        return FeedPosition(order="latest", before=bound(fields.get("b")))
    if order == "r":
        packed, floor, more = fields.get("p"), fields.get("f"), fields.get("m")
        if not isinstance(packed, str) or more not in (0, 1) or isinstance(more, bool):
            raise ValueError("bad ranked position")
        pending = unpack_ids(packed)
        if len(pending) > WINDOW:
            raise ValueError("more pending ids than a window holds")
        return FeedPosition(
            order="ranked",
            pending=tuple(pending),
            floor=None if floor is None else bound(floor),
            more=bool(more),
        )
    raise ValueError("unknown order")
