"""What user-written text may contain.

Control characters (C0, DEL and C1, which holds terminal escapes) have no place in names, bios or
captions: they break rendering and logs, and PostgreSQL refuses NUL in text outright, so a caption
that SQLite stored would fail on the scale backend. Line breaks and tabs are allowed where text
may span lines; a single-line field refuses the Unicode line and paragraph separators too.
"""

from __future__ import annotations

import re

# Also pydantic's `pattern`s: their escapes read the same to Python's and to Rust's regex engines.
SINGLE_LINE = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"

_MULTI_LINE = re.compile(MULTI_LINE)


def is_clean_multi_line(text: str) -> bool:
    # fullmatch: Python's `$` would also match before a final newline, Rust's does not.
    return _MULTI_LINE.fullmatch(text) is not None
