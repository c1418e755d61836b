"""Where browsers fetch media, and the signatures that let them fetch private media.

Public media has plain, permanent URLs: CDNs keep them for a year. Media that only some may see
(a private account's, a post still processing) gets URLs signed for a while, like Instagram's
CDN URLs: whoever is shown the post may fetch its photos until the signature expires, then
must be shown the post again. A signed URL names the viewer it was made for, and the origin
asks again (within its cache TTL) whether that viewer may still see the key: so losing access
(an unfollow, a block, an account going private, a deleted post) reaches its media too, not
just the API, long before the signature expires. Expiry times are rounded to whole periods, so a URL
stays the same, and browser caches keep working, for a while.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from glimpse.signing import signature, signature_matches


@dataclass(frozen=True)
class MediaUrls:
    base_url: str  # empty for this server's own /media/, or a CDN's URL
    secret: bytes
    ttl_seconds: int  # a signed URL works for between one and two of these
    clock: Callable[[], float] = field(default=time.time)

    def url(self, key: str, *, public: bool, viewer: int = 0, not_after: int | None = None) -> str:
        """A plain URL for public media; else one signed for `viewer` (an account id), and
        that stops working at `not_after` (seconds since the epoch) if that comes sooner: a
        story's media, whose URLs die with it."""
        plain = f"{self.base_url}/media/{key}"
        if public:
            return plain
        expires = (int(self.clock()) // self.ttl_seconds + 2) * self.ttl_seconds
        if not_after is not None:
            expires = min(expires, not_after)
        sig = signature(self.secret, _message(key, expires, viewer), _SIG_BYTES)
        return f"{plain}?exp={expires}&v={viewer}&sig={sig}"

    def signed_viewer(
        self, key: str, exp: str | None, sig: str | None, viewer: str | None
    ) -> int | None:
        """The viewer a request for private media was signed for, if its signature is valid
        and unexpired; else None."""
        if exp is None or sig is None or viewer is None:
            return None
        if not _is_number(exp, 12) or not _is_number(viewer, 19):
            return None
        expires, viewer_id = int(exp), int(viewer)
        if str(viewer_id) != viewer:  # one spelling per URL ("042" is not 42's)
            return None
        if expires <= self.clock() or viewer_id >= 2**63:
            return None
        if not signature_matches(self.secret, _message(key, expires, viewer_id), sig, _SIG_BYTES):
            return None
        return viewer_id


def _is_number(text: str, max_digits: int) -> bool:
    # isdigit() alone takes other scripts' digits ("\u0661"): ASCII only.
    return text.isascii() and text.isdigit() and len(text) <= max_digits


_SIG_BYTES = 16


def _message(key: str, expires: int, viewer: int) -> bytes:
    return f"media:{key}:{expires}:{viewer}".encode()
