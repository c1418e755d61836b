"""`/docs`: Swagger UI from files installed with the package, under a strict CSP.

FastAPI's own page loads Swagger UI from a public CDN (a blank page on an offline network, and
code from a third party run on our origin) and starts it with an inline script. Here the files
come from the `fastapi-offline` package (Swagger UI's dist files, MIT), the start-up script is
a file of ours, and the page may load nothing but from its own origin.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, HTMLResponse

from glimpse.errors import NotFound

router = APIRouter(include_in_schema=False)

_SWAGGER_UI = Path(str(files("fastapi_offline") / "static"))
_OURS = Path(__file__).parent / "static"
# The only files served, and where each lies.
_STATIC_FILES = {
    "swagger-ui-bundle.js": _SWAGGER_UI / "swagger-ui-bundle.js",
    "swagger-ui.css": _SWAGGER_UI / "swagger-ui.css",
    "favicon.png": _SWAGGER_UI / "favicon.png",
    "swagger-init.js": _OURS / "swagger-init.js",
}

# Swagger UI sets style attributes (collapsing sections, SVG icons), hence inline styles; no
# inline script, no other origin, no framing. Images may be data: URIs (its CSS icons).
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

# Relative links, so that the page works under a path prefix (a proxy's root_path) too.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Glimpse API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/static/favicon.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js"></script>
<script src="docs/static/swagger-init.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def docs_page() -> HTMLResponse:
    """The interactive API documentation."""
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


@router.get("/docs/static/{name}")
async def docs_file(name: str) -> FileResponse:
    """One of the documentation page's own files."""
    path = _STATIC_FILES.get(name)
    if path is None:
        raise NotFound("Not found.")
    # Immutable for a day: the files change only with an upgrade.
    return FileResponse(path, headers={"Cache-Control": "public, max-age=86400"})
