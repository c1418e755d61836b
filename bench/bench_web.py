"""The web app's feed page (issue 15) in Debian's Chromium: time to first render and the
requests it makes, beside the same page using the JPEG `w1080` variant everywhere, in one run.

Set-up: a real `glimpse serve` on a fresh data folder; one account shares 20 photos (crops of
the test photographs, 1600x1200, all different, so that no two share a file); the feed page
shows all 20. Each round opens the page in a new browser context (a cold cache) at a phone's
size (375x812, device scale 2) and a desktop's (1280x900), once as Glimpse serves it
(`<picture>` with WebP sources (AVIF where a post has it), `srcset` of w320/w640/w1080, lazy below the fold) and
once rewritten on its way to the browser so that every photo is the JPEG `w1080` (same
markup otherwise, lazy loading kept). Each is measured twice: on the loopback as is, and
under Lighthouse's mobile network (150 ms round trip, 1.6 Mbit/s down, 750 kbit/s up).

Figures (medians over the rounds), from Chromium's own timings: first contentful paint,
largest contentful paint, the load event, the number of requests and the bytes transferred
at load; and, after scrolling through all 20 posts, the requests and bytes of the whole page.

    python bench/bench_web.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import io
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from playwright.sync_api import Browser, Page, Route, sync_playwright

sys.path.insert(0, str(Path(__file__).parents[1]))
from bench.testdata import testdata
from tests.browser import CHROMIUM, CHROMIUM_ARGS
from tests.servers import Server

PASSWORD = "correct horse battery"
POSTS = 20
SLOW_4G = {
    "offline": False,
    "latency": 150,
    "downloadThroughput": 1.6e6 / 8,
    "uploadThroughput": 750e3 / 8,
}
SCREENS = {
    "phone": {"viewport": {"width": 375, "height": 812}, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1280, "height": 900}, "device_scale_factor": 1},
}

_METRICS = """() => new Promise((resolve) => {
  let lcp = 0;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) lcp = Math.max(lcp, e.startTime);
  }).observe({ type: "largest-contentful-paint", buffered: true });
  setTimeout(() => {
    const nav = performance.getEntriesByType("navigation")[0];
    const fcp = performance.getEntriesByName("first-contentful-paint")[0];
    const resources = performance.getEntriesByType("resource");
    resolve({
      fcp: fcp ? fcp.startTime : 0,
      lcp,
      load: nav.loadEventEnd,
      requests: 1 + resources.length,
      bytes: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
      html: nav.transferSize,
    });
  }, 200);
})"""

_TOTALS = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  return {
    requests: 1 + resources.length,
    bytes: nav.transferSize + resources.reduce((s, r) => s + r.transferSize, 0),
  };
}"""


def photos() -> list[bytes]:
    """20 different 1600x1200 JPEGs: crops of two large test photographs."""
    sources = [Image.open(testdata(p)).convert("RGB") for p in ("camera/canon_hdr_YES.jpg",)]
    big = Image.open(testdata("camera/iphone_hdr_YES.jpg")).convert("RGB")
    sources.append(big.resize((2448, 1836)))
    out = []
    for n in range(POSTS):
        source = sources[n % 2]
        step = n // 2
        left = (step * 37) % (source.width - 1600)
        top = (step * 23) % (source.height - 1200)
        buffer = io.BytesIO()
        source.crop((left, top, left + 1600, top + 1200)).save(buffer, "JPEG", quality=88)
        out.append(buffer.getvalue())
    return out


def load(server: Server) -> None:
    base = server.base
    assert httpx.post(
        f"{base}/api/v1/accounts", json={"username": "bench", "password": PASSWORD}
    ).is_success
    token = httpx.post(
        f"{base}/api/v1/auth/token", json={"username": "bench", "password": PASSWORD}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    for n, data in enumerate(photos()):
        response = httpx.post(
            f"{base}/api/v1/posts",
            headers=headers,
            files={"file": (f"p{n}.jpg", data, "image/jpeg")},
            data={"caption": f"Photo {n}", "alt_text": f"Test photograph {n}"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for post_id in ids:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            post = httpx.get(f"{base}/api/v1/posts/{post_id}", headers=headers).json()
            if post["status"] == "ready":
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"post {post_id} was not processed in time")


def as_w1080_jpeg(html: str) -> str:
    """The same page with every photo's <picture> reduced to the JPEG w1080 (the largest
    width of its JPEG srcset)."""
    html = re.sub(r"<source [^>]*>", "", html)

    def largest(match: re.Match[str]) -> str:
        srcset = match.group(2)
        biggest = srcset.split(", ")[-1].split(" ")[0]
        return f'<img src="{biggest}"'

    return re.sub(r'<img src="([^"]*)" srcset="([^"]*)" sizes="[^"]*"', largest, html)


def sign_in(browser: Browser, base: str, screen: dict[str, Any]) -> dict[str, Any]:
    """A signed-in browser's cookies (a session made once, reused by every context)."""
    context = browser.new_context(base_url=base, **screen)
    page = context.new_page()
    page.goto("/signin")
    page.get_by_label("Username").fill("bench")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base}/")
    state = context.storage_state()
    context.close()
    return state


def measure(
    browser: Browser, base: str, screen: dict[str, Any], state: Any, rewrite: bool, slow: bool
) -> dict[str, float]:
    context = browser.new_context(base_url=base, storage_state=state, **screen)
    page: Page = context.new_page()
    if slow:
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", SLOW_4G)
    if rewrite:

        def handle(route: Route) -> None:
            response = route.fetch()
            route.fulfill(response=response, body=as_w1080_jpeg(response.text()))

        page.route(re.compile(r"/\?order=latest$"), handle)
    page.goto("/?order=latest", wait_until="load")
    figures: dict[str, float] = page.evaluate(_METRICS)
    assert page.locator("article.post").count() == POSTS
    # Then the whole page, as someone scrolling through every post.
    for _ in range(POSTS):
        page.mouse.wheel(0, 700)
        page.wait_for_timeout(30 if not slow else 120)
    page.wait_for_load_state("networkidle")
    totals = page.evaluate(_TOTALS)
    figures["all_requests"] = totals["requests"]
    figures["all_bytes"] = totals["bytes"]
    context.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        server = Server(Path(data), env={"GLIMPSE_RATE_LIMITS": "off", "GLIMPSE_WORKERS": "1"})
        try:
            load(server)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name, screen in SCREENS.items():
                    state = sign_in(browser, server.base, screen)
                    for slow in (False, True):
                        results: dict[bool, list[dict[str, float]]] = {False: [], True: []}
                        for _ in range(args.rounds):
                            for rewrite in (False, True):  # in turns, so noise hits both
                                results[rewrite].append(
                                    measure(browser, server.base, screen, state, rewrite, slow)
                                )
                        report(name, slow, results)
                browser.close()
        finally:
            server.close()


def report(screen: str, slow: bool, results: dict[bool, list[dict[str, float]]]) -> None:
    network = "Lighthouse mobile network (150 ms RTT, 1.6 Mbit/s)" if slow else "loopback"
    print(f"\n{screen}, {network}, median of {len(results[False])} cold loads")
    print("| figure | Glimpse's page | w1080 JPEG everywhere | ratio |")
    print("|---|---|---|---|")
    for key, label, unit in (
        ("html", "the page's HTML", "KB"),
        ("fcp", "first contentful paint", "ms"),
        ("lcp", "largest contentful paint", "ms"),
        ("load", "load event", "ms"),
        ("requests", "requests at load", ""),
        ("bytes", "bytes at load", "KB"),
        ("all_requests", "requests, all 20 posts seen", ""),
        ("all_bytes", "bytes, all 20 posts seen", "KB"),
    ):
        ours = statistics.median(r[key] for r in results[False])
        theirs = statistics.median(r[key] for r in results[True])
        scale = 1024 if unit == "KB" else 1
        if unit == "KB" and ours / scale < 100:
            print(
                f"| {label} | {ours / scale:,.1f} KB | {theirs / scale:,.1f} KB | {ours / theirs:.2f} |"
            )
            continue
        ratio = ours / theirs if theirs else float("nan")
        print(
            f"| {label} | {ours / scale:,.0f} {unit} | {theirs / scale:,.0f} {unit} | {ratio:.2f} |"
        )


if __name__ == "__main__":
    main()
