"""What user-written text may contain.

Control characters have no place in names, bios or captions: they break rendering and logs, and
PostgreSQL refuses NUL in text outright, so a caption that SQLite stored would fail on the scale
backend. Line breaks and tabs are allowed where text may span lines.
"""

from __future__ import annotations

import re

# For pydantic's `pattern` (its regex engine is Rust's, hence the \x escapes).
SINGLE_LINE = r"^[^\x00-\x1f\x7f]*$"
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"

_MULTI_LINE = re.compile(MULTI_LINE)


def is_clean_multi_line(text: str) -> bool:
    return _MULTI_LINE.match(text) is not None
