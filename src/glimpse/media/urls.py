"""Where browsers fetch media, and the signatures that let them fetch private media.

Public media has plain, permanent URLs: CDNs keep them for a year. Media that only some may see
(a private account's, a post still processing) gets URLs signed for a while, like Instagram's
CDN URLs: whoever is shown the post may fetch its photos until the signature expires, then
must be shown the post again. So losing access (an account going private, a deleted post)
reaches its media too, not just the API. Expiry times are rounded to whole periods, so a URL
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

    def url(self, key: str, *, public: bool) -> str:
        plain = f"{self.base_url}/media/{key}"
        if public:
            return plain
        expires = (int(self.clock()) // self.ttl_seconds + 2) * self.ttl_seconds
        sig = signature(self.secret, _message(key, expires), _SIG_BYTES)
        return f"{plain}?exp={expires}&sig={sig}"

    def allows(self, key: str, exp: str | None, sig: str | None) -> bool:
        """Whether a request for private media carries a valid, unexpired signature."""
        if exp is None or sig is None or not exp.isascii() or not exp.isdigit() or len(exp) > 12:
            return False
        expires = int(exp)
        if expires <= self.clock():
            return False
        return signature_matches(self.secret, _message(key, expires), sig, _SIG_BYTES)


_SIG_BYTES = 16


def _message(key: str, expires: int) -> bytes:
    return f"media:{key}:{expires}".encode()
