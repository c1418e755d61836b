"""A module no decoding child has imported before a test hands it a function from here. Its
C extension needs new memory mappings to load, as unicodedata did when pytest's own modules
were first unpickled in a child left under a previous task's memory budget."""

from __future__ import annotations

import _codecs_jp  # noqa: F401


def double(value: int) -> int:
    return value * 2
