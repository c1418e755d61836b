"""Debian's Chromium as the web app's tests and bench/bench_web.py launch it (never a browser
Playwright downloads)."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# As root on a closed network: no sandbox (it needs user namespaces), and none of the
# background connections Chromium would make to Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
