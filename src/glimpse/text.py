"""What user-written text may contain.

Control characters (C0, DEL and C1, which holds terminal escapes) have no place in names, bios or
captions: they break rendering and logs, and PostgreSQL refuses NUL in text outright, so a caption
that SQLite stored would fail on the scale backend. Line breaks and tabs are allowed where text
may span lines; a single-line field refuses the Unicode line and paragraph separators too.

Nor may text hold characters that change how the text around them shows without showing
themselves: bidi overrides, embeddings, isolates and marks (U+202E turns "alice" into a name that
reads "ecila"), zero-width characters and tag characters (U+E0000-U+E007F). With them one account
can take another's name in any UI. They are refused (422), not stripped: what is stored is then
what the user sent, and a client sees why.

Three uses of invisible characters are real writing, and are allowed where they do their job:
- ZERO WIDTH JOINER between two emoji, which joins them into one (family, profession, rainbow
  flag: 👩‍💻, 🏳️‍🌈); a variation selector may come between.
- ZERO WIDTH NON-JOINER and JOINER between two letters of the Arabic and Indic scripts, whose
  spelling needs them (Persian "می‌خواهم", Devanagari half forms).
- Tag characters inside an emoji tag sequence: U+1F3F4 WAVING BLACK FLAG, tags, U+E007F CANCEL
  TAG (the flags of Scotland, England, Wales).
A joiner anywhere else (between Latin letters, at either end) is refused.
"""

from __future__ import annotations

import re

# These patterns are also pydantic's `pattern`s, read by Rust's regex engine: every escape here
# reads the same to it and to Python's (\xHH, \uHHHH, \UHHHHHHHH), and there is no lookaround,
# which Rust's engine does not have. tests/unit/test_text.py checks that both agree.

_SINGLE_LINE_CONTROLS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
_MULTI_LINE_CONTROLS = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
# Bidi marks, embeddings, overrides and isolates; zero-width spaces, joiners and marks, word
# joiner and invisible operators, the BOM; tag characters. Then the other characters that show
# nothing (Unicode's Default_Ignorable ones, and blanks that are letters): the soft hyphen
# ("ad\u00admin" shows as "admin"), the combining grapheme joiner, Hangul fillers (a "blank"
# name), Khmer and Mongolian invisible vowels and selectors, the braille blank, the interlinear
# annotation characters and musical formatting controls.
_INVISIBLE = (
    r"\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\U000e0000-\U000e007f"
    r"\u00ad\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u2800\u3164\uffa0\ufff0-\ufffb"
    r"\U0001d173-\U0001d17a"
)
# Emoji blocks (pictographs, dingbats, symbols, arrows and skin tones); close enough to the
# Unicode emoji list for deciding what a joiner may join.
_EMOJI = r"\u2600-\u27bf\u2b00-\u2bff\U0001f000-\U0001faff"
# Letters of the scripts that spell with joiners: Arabic (without its letter mark U+061C, a bidi
# control) and its supplements and presentation forms, and the Indic scripts.
_JOINING_SCRIPTS = (
    r"\u0600-\u061b\u061d-\u06ff\u0750-\u077f\u08a0-\u08ff\u0900-\u0dff\ufb50-\ufdff\ufe70-\ufefc"
)
_EMOJI_ZWJ_SEQUENCE = rf"[{_EMOJI}]\ufe0f?(?:\u200d[{_EMOJI}]\ufe0f?)+"
_JOINED_LETTERS = rf"[{_JOINING_SCRIPTS}](?:[\u200c\u200d][{_JOINING_SCRIPTS}])+"
_EMOJI_TAG_SEQUENCE = r"\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f"


def _pattern(controls: str) -> str:
    allowed = (
        f"[^{controls}{_INVISIBLE}]|{_EMOJI_ZWJ_SEQUENCE}|{_JOINED_LETTERS}|{_EMOJI_TAG_SEQUENCE}"
    )
    return f"^(?:{allowed})*$"


SINGLE_LINE = _pattern(_SINGLE_LINE_CONTROLS)
MULTI_LINE = _pattern(_MULTI_LINE_CONTROLS)

_SINGLE_LINE = re.compile(SINGLE_LINE)
_MULTI_LINE = re.compile(MULTI_LINE)
# A lone surrogate is no character (Python's JSON parser lets "\ud800" through). Pydantic
# refuses it before matching, and Rust's engine cannot even name it, so it is looked for here.
_SURROGATE = re.compile("[\ud800-\udfff]")


def is_clean_single_line(text: str) -> bool:
    # fullmatch: Python's `$` would also match before a final newline, Rust's does not.
    return _SINGLE_LINE.fullmatch(text) is not None and not _SURROGATE.search(text)


def is_clean_multi_line(text: str) -> bool:
    return _MULTI_LINE.fullmatch(text) is not None and not _SURROGATE.search(text)
