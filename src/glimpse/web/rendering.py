"""Templates, the pages' headers, and the static files, all from the package itself: a
self-hosted instance on a closed network loads nothing from anywhere else."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from glimpse.config import Settings
from glimpse.errors import NotFound
from glimpse.web import presenting

_STATIC = Path(__file__).parent / "static"
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# Every user's text reaches a page through these templates, escaped: autoescape is on for
# every template whatever its name, and no template marks user text `safe`.
_ENV = Environment(
    loader=PackageLoader("glimpse.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.globals.update(
    picture=presenting.picture,
    thumbnail=presenting.thumbnail,
    video=presenting.video,
    initial=presenting.initial,
    count_label=presenting.count_label,
    FEED_SIZES=presenting.FEED_SIZES,
    GRID_SIZES=presenting.GRID_SIZES,
)


@functools.cache
def _static_files() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, media type, version): read once, when first asked."""
    files = {}
    for path in sorted(_STATIC.iterdir()):
        if path.suffix in _STATIC_TYPES:
            content = path.read_bytes()
            version = hashlib.sha256(content).hexdigest()[:12]
            files[path.name] = (content, _STATIC_TYPES[path.suffix], version)
    return files


def static_url(name: str) -> str:
    """A static file's URL, with its content's hash: cacheable for good, new on every change."""
    return f"/static/{name}?v={_static_files()[name][2]}"


_ENV.globals["static_url"] = static_url


def static_file(name: str) -> Response:
    found = _static_files().get(name)
    if found is None:
        raise NotFound("Not found.")
    content, media_type, _ = found
    return Response(
        content,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


def content_security_policy(media_base_url: str) -> str:
    """Only our own scripts and styles, no inline script; images and video from this origin, the
    media origin's if it is another (a CDN), and data:/blob: (placeholders and upload previews)."""
    media = ""
    if media_base_url:
        parts = urlsplit(media_base_url)
        if parts.scheme and parts.netloc:
            media = f" {parts.scheme}://{parts.netloc}"
    return (
        "default-src 'none'; "
        "script-src 'self'; "
        "style-src 'self'; "
        f"img-src 'self' data: blob:{media}; "
        f"media-src 'self' blob:{media}; "
        "connect-src 'self'; "
        "font-src 'self'; "
        "manifest-src 'self'; "
        "form-action 'self'; "
        "base-uri 'none'; "
        "frame-ancestors 'none'; "
        "object-src 'none'"
    )


# The headers an error's answer keeps when it is shown as a page.
_KEPT_HEADERS = ("retry-after", "allow", "connection", "ratelimit-limit", "ratelimit-remaining",
                 "ratelimit-reset")  # fmt: skip


def error_page(settings: Settings, response: Response) -> Response:
    """An error answered in API.md's JSON body, as the web app's page of the same status, with
    the same message and the headers that matter (Retry-After, Allow, Connection)."""
    try:
        message = str(json.loads(bytes(response.body))["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = "Something went wrong."
    headers = {k: v for k, v in response.headers.items() if k.lower() in _KEPT_HEADERS}
    return render(
        settings,
        "error.html",
        status=response.status_code,
        headers=headers,
        viewer=None,
        csrf_token="",
        message=message,
    )


def render(
    settings: Settings,
    template: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _ENV.get_template(template).render(**context)
    return HTMLResponse(
        html,
        status_code=status,
        headers={
            **(headers or {}),
            "Content-Security-Policy": content_security_policy(settings.media_base_url),
            # A page holds one person's feed and their signed media URLs.
            "Cache-Control": "no-store",
            # Signed media URLs must not leak to other sites in a Referer.
            "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY",
        },
    )
