"""Signed URLs of private media (pure logic, a fake clock)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from glimpse.media.urls import MediaUrls

KEY = "v/ab/" + "ab" * 32 + ".jpg"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


VIEWER = 4242


def _signed(urls: MediaUrls, key: str = KEY) -> tuple[str, str, str]:
    url = urls.url(key, public=False, viewer=VIEWER)
    query = parse_qs(urlsplit(url).query)
    assert query["v"] == [str(VIEWER)]
    return url, query["exp"][0], query["sig"][0]


def allows(urls: MediaUrls, key: str, exp: str | None, sig: str | None) -> bool:
    return urls.signed_viewer(key, exp, sig, str(VIEWER)) == VIEWER


def test_public_media_has_plain_permanent_urls() -> None:
    urls = MediaUrls("https://cdn.example", b"secret", 3600)
    assert urls.url(KEY, public=True) == f"https://cdn.example/media/{KEY}"


def test_a_signed_url_works_for_one_to_two_periods_and_then_never() -> None:
    clock = Clock(1_000_000.0)
    urls = MediaUrls("", b"secret", 3600, clock)
    url, exp, sig = _signed(urls)
    assert url.startswith(f"/media/{KEY}?exp=")
    assert 3600 <= int(exp) - clock.now <= 7200
    assert allows(urls, KEY, exp, sig)
    clock.now = int(exp) - 1
    assert allows(urls, KEY, exp, sig)
    clock.now = int(exp)
    assert not allows(urls, KEY, exp, sig)


def test_the_url_stays_the_same_within_a_period() -> None:
    # So that browsers keep what they cached while the post is shown again and again.
    clock = Clock(3600 * 100 + 1)
    urls = MediaUrls("", b"secret", 3600, clock)
    first = urls.url(KEY, public=False, viewer=VIEWER)
    clock.now += 3000
    assert urls.url(KEY, public=False, viewer=VIEWER) == first


def test_signatures_open_nothing_but_their_key_and_expiry_and_need_the_secret() -> None:
    urls = MediaUrls("", b"secret", 3600, Clock(1_000_000.0))
    _, exp, sig = _signed(urls)
    assert not allows(urls, "v/cd/" + "cd" * 32 + ".jpg", exp, sig)
    assert not allows(urls, KEY, str(int(exp) + 3600), sig)
    assert not allows(MediaUrls("", b"other secret", 3600, Clock(1_000_000.0)), KEY, exp, sig)
    for bad_exp, bad_sig in [
        (None, sig),
        (exp, None),
        ("", sig),
        ("-5", sig),
        ("1e9", sig),
        ("\u0661\u0662", sig),  # Arabic-Indic digits: isdigit() says yes
        ("9" * 40, sig),
        (exp, sig + "x"),
        (exp, "\U0001f4f7"),
    ]:
        assert not allows(urls, KEY, bad_exp, bad_sig), (bad_exp, bad_sig)


def test_a_signature_is_for_one_viewer_only() -> None:
    # The origin asks whether the signed-for viewer may still see the key; a URL passed on to
    # (or edited by) someone else cannot name them instead.
    urls = MediaUrls("", b"secret", 3600, Clock(1_000_000.0))
    _, exp, sig = _signed(urls)
    assert urls.signed_viewer(KEY, exp, sig, str(VIEWER)) == VIEWER
    for other in (str(VIEWER + 1), "0", "", "04242", "+4242", "9" * 20, "\u0664242"):
        assert urls.signed_viewer(KEY, exp, sig, other) is None, other
    assert urls.signed_viewer(KEY, exp, sig, None) is None


def test_a_viewer_past_64_bits_is_no_viewer() -> None:
    urls = MediaUrls("", b"secret", 3600, Clock(1_000_000.0))
    query = parse_qs(urlsplit(urls.url(KEY, public=False, viewer=2**63)).query)
    assert urls.signed_viewer(KEY, query["exp"][0], query["sig"][0], query["v"][0]) is None
