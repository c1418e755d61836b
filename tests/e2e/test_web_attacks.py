"""The web app under attack: an XSS corpus (tests/data/hostile/xss.txt: the OWASP filter evasion
cheat sheet's vectors and polyglots) written by hostile accounts into every field a page shows
(display names, bios, captions, alt texts, comments, highlight titles), then read by a victim
in Debian's Chromium on every page where they appear.

A page passes when no vector ran and none became markup: alert/confirm/prompt were never
called, the page reported no Content-Security-Policy violation (an injected element would be
blocked by the CSP, and reported: the escape would still have failed), no element carries an
inline event handler, every script is one of ours, and each vector shows on the page as the
very text that was written. The counts (inputs, refusals, 5xx) are in RELIABILITY.md.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, expect

from tests.browser import CHROMIUM
from tests.servers import Server

CORPUS = Path(__file__).parents[1] / "data" / "hostile" / "xss.txt"
PASSWORD = "correct horse battery"
MAX_SINGLE_LINE = 64  # display names and highlight titles (API.md)
HIGHLIGHTS_PER_ACCOUNT = 30

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it)",
)

# Runs before any script of the page: records any call a vector would make, and any element
# the Content-Security-Policy had to block.
_WATCH = """
window.__xss = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = (...args) => { window.__xss.push(name + "(" + args.join(",") + ")"); };
}
document.addEventListener("securitypolicyviolation", (e) => {
  window.__xss.push("csp " + e.violatedDirective + " " + e.blockedURI + " " + (e.sample || ""));
});
"""
# What became markup: inline event handlers, scripts that are not ours, javascript: URLs.
_INJECTED = """() => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const a of el.attributes) {
      if (/^on/i.test(a.name)) found.push(el.tagName + " " + a.name);
      if (/^\\s*(javascript|vbscript|data):/i.test(a.value)) found.push(el.tagName + " " + a.name);
    }
    if (el.tagName === "SCRIPT" && !new URL(el.src || "x:", location.href).pathname.startsWith("/static/"))
      found.push("script " + el.outerHTML.slice(0, 80));
    if (["IFRAME", "FRAME", "OBJECT", "EMBED", "BASE", "MARQUEE", "KEYGEN", "ISINDEX", "TEMPLATE",
         "NOSCRIPT", "PLAINTEXT", "DETAILS", "MATH", "FRAMESET", "X"].includes(el.tagName))
      found.push(el.tagName);
  }
  return found;
}"""


def corpus() -> list[str]:
    lines = CORPUS.read_text(encoding="utf-8").splitlines()
    return [
        line.replace("\\t", "\t") for line in lines if line.strip() and not line.startswith("# ")
    ]


class Api:
    """The JSON API as the attackers and the victim use it; every answer is counted, and a 5xx
    fails the test at once."""

    def __init__(self, base: str) -> None:
        self.client = httpx.Client(base_url=base, timeout=30)
        self.statuses: dict[int, int] = {}

    def __call__(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.client.request(method, path, headers=headers, **kw)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response

    def account(self, username: str, display_name: str | None = None) -> tuple[str, int]:
        """Signs up (with the display name, if it is accepted) and signs in: (token, status
        of the display name: 201 taken, 422 refused)."""
        body = {"username": username, "password": PASSWORD}
        status = 201
        if display_name is not None:
            response = self("POST", "/api/v1/accounts", json={**body, "display_name": display_name})
            status = response.status_code
        if display_name is None or status == 422:
            assert self("POST", "/api/v1/accounts", json=body).status_code == 201
        token = self("POST", "/api/v1/auth/token", json=body).json()["access_token"]
        return str(token), status

    def post(self, token: str, caption: str, alt_text: str) -> httpx.Response:
        files = [("file", ("p.jpg", _jpeg(), "image/jpeg"))]
        data = {"caption": caption, "alt_text": alt_text}
        return self("POST", "/api/v1/posts", token, files=files, data=data)

    def wait_ready(self, token: str, path: str) -> dict[str, Any]:
        for _ in range(600):
            body: dict[str, Any] = self("GET", path, token).json()
            if body["status"] == "ready":
                return body
            assert body["status"] == "processing", body
            self.client.get("/healthz")  # (a short pause that also proves the server is up)
        raise AssertionError(f"{path} never became ready")


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 200)).save(out, "JPEG")
    return out.getvalue()


def _chunks(vectors: list[str], size: int) -> list[str]:
    """The vectors, one a line, in texts of at most `size` characters."""
    texts: list[str] = []
    for vector in vectors:
        if texts and len(texts[-1]) + 1 + len(vector) <= size:
            texts[-1] += "\n" + vector
        else:
            texts.append(vector)
    return texts


class Reader:
    """A signed-in browser context that checks each page it opens."""

    def __init__(self, browser: Browser, base: str, username: str) -> None:
        self.context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
        self.context.add_init_script(_WATCH)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto("/signin")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("navigation", name="Main")).to_be_visible()
        self.pages = 0

    def check(self, shown: list[str], where: str) -> None:
        """No vector ran or became markup on the page as it is now, and each of `shown` is
        on it as text."""
        page = self.page
        page.wait_for_load_state("load")
        assert page.evaluate("window.__xss") == [], where
        assert page.evaluate(_INJECTED) == [], where
        text = page.evaluate("document.title + document.body.textContent")
        missing = [v for v in shown if v not in text]
        assert missing == [], (where, missing[:3])
        assert self.errors == [], (where, self.errors)
        self.pages += 1

    def open(self, path: str, shown: list[str]) -> None:
        self.page.goto(path)
        self.check(shown, path)

    def close(self) -> None:
        self.context.close()


def test_an_xss_corpus_in_every_field_runs_on_no_page(server: Server, browser: Browser) -> None:
    vectors = corpus()
    assert len(vectors) > 90
    api = Api(server.base)
    victim, _ = api.account("victim")
    vault, _ = api.account("vault")
    api("PATCH", "/api/v1/me", vault, json={"is_private": True})

    # One hostile account per vector: its display name (when short enough), its bio, and a
    # comment on the victim's post; each asks to follow the private account.
    target = api.post(victim, "An honest caption", "An honest alt text").json()
    api.wait_ready(victim, f"/api/v1/posts/{target['id']}")
    accounts: list[tuple[str, str, bool]] = []  # (username, vector, display name taken)
    refused: dict[str, list[str]] = {"display_name": [], "bio": [], "comment": []}
    for i, vector in enumerate(vectors):
        username = f"x{i:03d}"
        short = len(vector) <= MAX_SINGLE_LINE
        token, status = api.account(username, vector if short else None)
        if short and status == 422:
            refused["display_name"].append(vector)
        else:
            assert status == 201
        bio = api("PATCH", "/api/v1/me", token, json={"bio": vector})
        if bio.status_code == 422:
            refused["bio"].append(vector)
        comment = api(
            "POST", f"/api/v1/posts/{target['id']}/comments", token, json={"text": vector}
        )
        if comment.status_code == 422:
            refused["comment"].append(vector)
        else:
            assert comment.status_code == 201, comment.text
        api("POST", "/api/v1/users/vault/follow", token)
        api("POST", f"/api/v1/users/{username}/follow", victim)
        accounts.append((username, vector, short and status == 201))

    # A tab is the only character of the corpus a single-line field refuses; nothing else is.
    assert all("\t" in v for v in refused["display_name"]), refused["display_name"]
    assert refused["bio"] == [] and refused["comment"] == [], refused

    # Captions and alt texts: the whole corpus, in posts by one account; highlights titled
    # with each short vector, of a story each of a few more accounts has.
    author, _ = api.account("xposts")
    api("POST", "/api/v1/users/xposts/follow", victim)
    posts = [api.post(author, text, text).json() for text in _chunks(vectors, 2200)]
    titles = [v for v in vectors if len(v) <= MAX_SINGLE_LINE and "\t" not in v]
    groups = [
        titles[i : i + HIGHLIGHTS_PER_ACCOUNT]
        for i in range(0, len(titles), HIGHLIGHTS_PER_ACCOUNT)
    ]
    stories: list[tuple[str, str, dict[str, Any]]] = []  # (username, token, story)
    for n in range(len(groups)):
        token, _ = api.account(f"xstories{n}")
        api("POST", f"/api/v1/users/xstories{n}/follow", victim)
        files = [("file", ("s.jpg", _jpeg(), "image/jpeg"))]
        stories.append(
            (f"xstories{n}", token, api("POST", "/api/v1/stories", token, files=files).json())
        )
    for post in posts:
        api.wait_ready(author, f"/api/v1/posts/{post['id']}")
    for (_, token, story), group in zip(stories, groups, strict=True):
        api.wait_ready(token, f"/api/v1/stories/{story['id']}")
        for title in group:
            made = api(
                "POST",
                "/api/v1/me/highlights",
                token,
                json={"title": title, "story_ids": [story["id"]]},
            )
            assert made.status_code == 201, made.text

    reader = Reader(browser, server.base, "victim")
    try:
        # Every profile: display name (title, header, avatar initial) and bio.
        for username, vector, named in accounts:
            reader.open(f"/{username}", [vector])
            assert named == (reader.page.locator(".display-name").text_content() == vector)
        # The feed (captions of the posts; the story tray), and each post's own page.
        captions = "\n".join(_chunks(vectors, 2200)).split("\n")
        reader.open("/?order=latest", captions)
        for post in posts:
            reader.open(f"/p/{post['id']}", post["caption"].split("\n"))
        assert set(captions) == set(vectors)
        # The victim's post with a comment of every vector: 50 on the page, the rest fetched by
        # the page's script ("More comments").
        reader.open(f"/p/{target['id']}", [])
        shown = reader.page.locator(".comment-list li")
        assert shown.count() == 50
        assert all(text.split(" ", 1)[1] in vectors for text in shown.all_text_contents())
        more = reader.page.get_by_role("button", name="More comments")
        while shown.count() < len(vectors):
            before = shown.count()
            more.click()
            expect(shown).not_to_have_count(before)
        expect(more).to_be_hidden()
        reader.check(vectors, "all comments")
        # Highlights, titled with the corpus, and one played in the story viewer.
        for (username, _, _), group in zip(stories, groups, strict=True):
            reader.open(f"/{username}", group)
        reader.page.locator(".highlight").first.click()
        expect(reader.page.get_by_role("dialog", name="Story")).to_be_visible()
        reader.check([], "a highlight playing")
        reader.page.keyboard.press("Escape")
        reader.open("/", [])
        reader.page.get_by_role("button", name="xstories0's story").click()
        expect(reader.page.get_by_role("dialog", name="Story")).to_be_visible()
        reader.check([], "the story viewer")
    finally:
        reader.close()

    # The private account's follow requests list every hostile account.
    owner = Reader(browser, server.base, "vault")
    try:
        owner.open("/requests", [])
        listed = owner.page.locator(".people li").evaluate_all(
            "(items) => items.map((li) => li.dataset.username)"
        )
        assert listed and set(listed) <= {u for u, _, _ in accounts}
    finally:
        owner.close()

    # Each hostile account's own settings form holds its display name and bio as values.
    for username, vector, named in accounts:
        if not any(c in vector for c in "\"'<"):
            continue
        if not ("textarea" in vector.lower() or vector[0] in "\"'"):
            continue
        own = Reader(browser, server.base, username)
        try:
            own.open("/settings/profile", [])
            assert own.page.locator("#bio").input_value() == vector
            if named:
                assert own.page.locator("#display_name").input_value() == vector
        finally:
            own.close()

    assert all(status < 500 for status in api.statuses), api.statuses
    print(
        f"\nXSS corpus: {len(vectors)} vectors; {sum(api.statuses.values())} API requests, "
        f"statuses {sorted(api.statuses.items())}; {reader.pages + owner.pages} pages checked; "
        f"refused: { {k: len(v) for k, v in refused.items()} }"
    )
