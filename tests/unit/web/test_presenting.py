"""How pages show media: the <picture> chosen from a Post's variants, thumbnails, videos,
avatars' initials, and the pages' Content-Security-Policy."""

from __future__ import annotations

from typing import Any

from glimpse.web import presenting
from glimpse.web.rendering import content_security_policy


def variant(name: str, width: int, content_type: str) -> dict[str, Any]:
    ext = content_type.split("/")[1]
    return {
        "name": name,
        "width": width,
        "height": width,
        "content_type": content_type,
        "url": f"/m/{name}.{ext}",
    }


def photo(
    widths: dict[str, int], types: tuple[str, ...] = ("image/jpeg", "image/webp")
) -> dict[str, Any]:
    return {
        "kind": "image",
        "width": 1080,
        "height": 1350,
        "blurhash": "LEHV6nWB2yk8pyo0adR*.7kCMdnj",
        "alt_text": "a cat",
        "variants": [variant(n, w, t) for n, w in widths.items() for t in types],
    }


FULL = {"w1080": 1080, "w640": 640, "w320": 320, "sq150": 150}


def test_a_picture_offers_every_width_in_each_format_smallest_first() -> None:
    p = presenting.picture(photo(FULL))
    assert [s.type for s in p.sources] == ["image/webp"]
    assert p.sources[0].srcset == "/m/w320.webp 320w, /m/w640.webp 640w, /m/w1080.webp 1080w"
    assert p.srcset == "/m/w320.jpeg 320w, /m/w640.jpeg 640w, /m/w1080.jpeg 1080w"
    # The <img>'s own src is the middle width, and the layout box is the photo's.
    assert p.src == "/m/w640.jpeg"
    assert (p.width, p.height, p.alt) == (1080, 1350, "a cat")
    assert p.blurhash == "LEHV6nWB2yk8pyo0adR*.7kCMdnj"


def test_avif_comes_first_where_a_post_has_it() -> None:
    media = photo(FULL)
    media["variants"] += [variant("w1080", 1080, "image/avif"), variant("w640", 640, "image/avif")]
    p = presenting.picture(media)
    assert [s.type for s in p.sources] == ["image/avif", "image/webp"]
    assert p.sources[0].srcset == "/m/w640.avif 640w, /m/w1080.avif 1080w"


def test_a_small_photo_lists_each_width_once() -> None:
    # Never upscaled: a 300-pixel photo has w320, w640 and w1080 all 300 wide.
    p = presenting.picture(photo({"w1080": 300, "w640": 300, "w320": 300, "sq150": 150}))
    assert p.srcset.count(" 300w") == 1 and "," not in p.srcset


def test_a_post_still_processing_has_an_empty_picture() -> None:
    p = presenting.picture({"kind": "image", "width": 0, "height": 0, "variants": []})
    assert (p.sources, p.src, p.srcset, p.alt, p.blurhash) == ((), "", "", "", "")


def test_a_thumbnail_is_the_square_with_w320_for_wider_cells() -> None:
    t = presenting.thumbnail(photo(FULL))
    assert t.src == "/m/sq150.jpeg"
    assert t.srcset == "/m/sq150.jpeg 150w, /m/w320.jpeg 320w"
    assert (t.width, t.height) == (150, 150)


def test_a_video_has_its_poster_and_both_mp4s() -> None:
    media = {
        "kind": "video",
        "width": 720,
        "height": 1280,
        "blurhash": "x",
        "alt_text": "",
        "variants": [
            variant("mp4_480", 480, "video/mp4"),
            variant("mp4_720", 720, "video/mp4"),
            variant("poster", 720, "image/jpeg"),
        ],
    }
    v = presenting.video(media)
    assert v.poster == "/m/poster.jpeg"
    assert [s.srcset for s in v.sources] == ["/m/mp4_720.mp4", "/m/mp4_480.mp4"]


def test_initials_and_counts() -> None:
    assert presenting.initial({"display_name": "élodie", "username": "e"}) == "É"
    assert presenting.initial({"display_name": "  ", "username": "zed"}) == "?"
    assert presenting.initial({"display_name": "", "username": "zed"}) == "Z"
    assert presenting.count_label(1, "like", "likes") == "1 like"
    assert presenting.count_label(1234, "like", "likes") == "1,234 likes"
    assert presenting.count_label(0, "like", "likes") == "0 likes"


def test_the_policy_runs_only_our_scripts_and_names_a_cdn_for_media() -> None:
    own = content_security_policy("")
    assert "script-src 'self';" in own and "'unsafe-inline'" not in own
    assert "default-src 'none'" in own and "frame-ancestors 'none'" in own
    assert "img-src 'self' data: blob:;" in own
    cdn = content_security_policy("https://cdn.example.net/media/")
    assert "img-src 'self' data: blob: https://cdn.example.net;" in cdn
    assert "media-src 'self' blob: https://cdn.example.net;" in cdn
    # Something that is no URL adds nothing (a policy can't be broken out of with it).
    assert content_security_policy("; script-src *") == own


def test_a_videos_thumbnail_is_its_poster() -> None:
    media = {
        "kind": "video",
        "width": 720,
        "height": 1280,
        "blurhash": "x",
        "alt_text": "",
        "variants": [
            variant("mp4_720", 720, "video/mp4"),
            variant("poster", 720, "image/jpeg"),
            variant("poster", 720, "image/webp"),
        ],
    }
    t = presenting.thumbnail(media)
    assert t.src == "/m/poster.jpeg"
    assert [s.srcset for s in t.sources] == ["/m/poster.webp 720w"]
