"""Every variant the web app's script asks a Media object for by name is one the server makes.

The script picks URLs with `variantUrl(variants, "<name>", "<type>")`; a name the server never
gives finds nothing, silently: the story viewer asked for a video story's `story` rendition
(the photos' name) where the server calls it `mp4_story`, and so played the landscape `mp4_720`
instead of the 9:16 rendition made for it.
"""

from __future__ import annotations

import re
from pathlib import Path

import glimpse.web
from glimpse.media.planning import SQUARE_VARIANT, STORY_VARIANT, WIDTH_VARIANTS
from glimpse.media.video_planning import POSTER_VARIANT, plan_variants
from glimpse.media.video_planning import STORY_VARIANT as VIDEO_STORY_VARIANT

APP_JS = Path(glimpse.web.__file__).parent / "static" / "app.js"
_LITERAL_CALL = re.compile(r'variantUrl\(\s*variants\s*,\s*"([^"]+)"\s*,\s*"([^"]+)"\s*\)')


def made_by_the_server() -> set[tuple[str, str]]:
    photo_names = [name for name, _ in WIDTH_VARIANTS] + [SQUARE_VARIANT[0], STORY_VARIANT]
    stills = ("image/jpeg", "image/webp")
    made = {(name, kind) for name in photo_names for kind in stills}
    made |= {(name, "image/avif") for name, _ in WIDTH_VARIANTS}
    made |= {(POSTER_VARIANT, kind) for kind in stills}
    made |= {(plan.name, "video/mp4") for plan in plan_variants(1920, 1080, story=True)}
    return made


def test_the_script_asks_only_for_variants_the_server_makes() -> None:
    asked = set(_LITERAL_CALL.findall(APP_JS.read_text()))
    assert asked, "no variantUrl calls found: the pattern no longer matches app.js"
    assert asked - made_by_the_server() == set()


def test_the_story_viewer_plays_a_video_story_s_9_by_16_rendition() -> None:
    assert (VIDEO_STORY_VARIANT, "video/mp4") in set(_LITERAL_CALL.findall(APP_JS.read_text()))
