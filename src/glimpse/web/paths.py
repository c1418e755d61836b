"""Which paths are the web app's pages: what a browser navigates to, and so what gets its
errors (a 404, a 429, a full disk's 503) as a page rather than the API's JSON body."""

from __future__ import annotations

_NOT_PAGES_PREFIXES = ("/api/", "/media/", "/docs", "/static/")
_NOT_PAGES = frozenset({"/openapi.json", "/metrics", "/healthz", "/readyz"})


def is_page(path: str) -> bool:
    return path not in _NOT_PAGES and not path.startswith(_NOT_PAGES_PREFIXES)
