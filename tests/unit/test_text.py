"""What user-written text may hold (glimpse/text.py), read the same by Python's regex engine
(captions, alt texts) and by pydantic's Rust one (display names, bios)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from glimpse.accounts.schemas import Bio, DisplayName
from glimpse.text import is_clean_multi_line, is_clean_single_line

DISPLAY_NAME = TypeAdapter(DisplayName)
BIO = TypeAdapter(Bio)

SCOTLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"

WRITING = [
    "Ada Lovelace",
    "José Ñandú 日本語 Ελληνικά",
    "مرحبا بالعالم",  # right-to-left text needs no control characters
    "👩\u200d💻 at work",  # woman technologist
    "👩\U0001f3fd\u200d💻",  # with a skin tone
    "👨\u200d👩\u200d👧\u200d👦",  # family
    "🏳\ufe0f\u200d🌈",  # rainbow flag
    "❤\ufe0f\u200d🔥",
    "🧑\U0001f3ff\u200d🤝\u200d🧑\U0001f3fb",
    SCOTLAND,
    "می\u200cخواهم",  # Persian spells with ZWNJ
    "क्\u200dष",  # Devanagari half form with ZWJ
]

IMPERSONATIONS = [
    "\u202eecila",  # right-to-left override
    "alice\u202c",
    "a\u202al\u202bice",
    "\u2066alice\u2069",  # isolates
    "\u2067a\u2068b",
    "ali\u200ece",  # left-to-right mark
    "ali\u200fce",
    "a\u061cb",  # Arabic letter mark
    "alice\u200b",  # zero-width space
    "al\u200cice",  # non-joiner between Latin letters
    "al\u200dice",  # joiner between Latin letters
    "a\u2060lice",  # word joiner
    "a\u2062b",
    "\ufeffalice",  # BOM
    "alice\U000e0061\U000e0064",  # tag characters
    "\U0001f3f4\U000e0067\U000e0062",  # a tag sequence without its end
    "a\U000e007f",
    "👍\u200d",  # a joiner at the end
    "\u200d👍",
    "👍\u200da",
    "\u200c",
    "a\ud800b",  # a lone surrogate
    "ad\u00admin",  # a soft hyphen: shows as "admin"
    "a\u034flice",  # combining grapheme joiner
    "\u3164",  # a Hangul filler: a blank name
    "\u115f\u1160",
    "\uffa0",
    "\u2800\u2800",  # braille blanks
    "a\u17b4b",  # Khmer invisible vowel
    "a\u180eb",  # Mongolian vowel separator
    "a\ufff9b\ufffb",  # interlinear annotation
    "a\U0001d173b",  # musical formatting
]


@pytest.mark.parametrize("text", WRITING)
def test_real_writing_and_emoji_sequences_are_accepted(text: str) -> None:
    assert is_clean_single_line(text) and is_clean_multi_line(text)
    DISPLAY_NAME.validate_python(text)
    BIO.validate_python(text + "\n" + text)


@pytest.mark.parametrize("text", IMPERSONATIONS)
def test_invisible_characters_that_disguise_text_are_refused(text: str) -> None:
    assert not is_clean_single_line(text)
    assert not is_clean_multi_line(text)
    with pytest.raises(ValidationError):
        DISPLAY_NAME.validate_python(text)
    with pytest.raises(ValidationError):
        BIO.validate_python(text)


def test_line_breaks_only_where_text_spans_lines() -> None:
    for text in ("a\nb", "a\r\nb", "a\u2028b", "a\u2029b"):
        assert not is_clean_single_line(text)
    assert is_clean_multi_line("a\nb\r\n\tc")
    assert not is_clean_multi_line("a\x00b") and not is_clean_multi_line("a\x1b[31m")


def _python_says(text: str, single: bool) -> bool:
    return is_clean_single_line(text) if single else is_clean_multi_line(text)


def _pydantic_says(text: str, single: bool) -> bool:
    try:
        (DISPLAY_NAME if single else BIO).validate_python(text)
    except ValidationError as exc:
        # (A lone surrogate is refused before any pattern is tried.)
        assert [e["type"] for e in exc.errors()] in (
            ["string_pattern_mismatch"],
            ["string_unicode"],
        )
        return False
    return True


# Text built mostly of the characters the rules are about, so that examples hit them.
_SPECIAL = "\u200b\u200c\u200d\u200e\u200f\u202a\u202e\u2066\u2069\u2060\u2064\ufeff\u061c\ufe0f\n\r\t\x00\x1b\x85\u2028"
_TAGS = "\U0001f3f4\U000e0020\U000e0067\U000e007e\U000e007f\U000e0000"
_LETTERS = "aZ é日یخक्ष👍👩💻🌈\U0001f3fd❤ "
CHARACTERS = st.sampled_from(_SPECIAL + _TAGS + _LETTERS) | st.characters()


@given(st.text(CHARACTERS, max_size=40), st.booleans())  # (under both max lengths)
def test_pythons_and_rusts_regex_engines_agree(text: str, single: bool) -> None:
    assert _python_says(text, single) == _pydantic_says(text, single), ascii(text)


@given(st.text(CHARACTERS, max_size=40))
def test_single_line_text_is_also_clean_multi_line_text(text: str) -> None:
    if is_clean_single_line(text):
        assert is_clean_multi_line(text)


def test_long_adversarial_text_is_judged_at_once() -> None:
    # Overlapping alternatives must not backtrack without end (a caption is 2,200 characters).
    for unit in ("👍", "👍\ufe0f", "ی", "👍\u200d👍", "ی\u200cی"):
        assert is_clean_multi_line(unit * 1000)
        assert not is_clean_multi_line(unit * 1000 + "\u202e")
        assert not is_clean_multi_line(unit * 1000 + "\u200d")


# a zero-width space is no joiner, even between Arabic letters.
@pytest.mark.parametrize("text", ["\u0645\u200b\u06cc", "\u0645\u200e\u06cc", "\u0915\u200b\u0937"])
async def test_only_zwnj_and_zwj_join_letters(text: str) -> None:
    assert not is_clean_single_line(text)
    assert not is_clean_multi_line(text)
