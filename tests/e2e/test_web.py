"""The web app in a real browser (Debian's Chromium, driven by Playwright) against a real
`glimpse serve`: people sign up, post with a filter, follow, like, comment, share and watch
stories, ask to follow a private account, and scroll the feed past its first page.

With GLIMPSE_SCREENSHOTS=<folder> the key screens are also saved there at 375 and 1280 pixels
wide (docs/screenshots/ is made so: see README.md).
"""

from __future__ import annotations

import io
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageOps
from playwright.sync_api import Browser, Page, expect

from glimpse.media.filters import apply_filter
from tests.browser import CHROMIUM
from tests.servers import Server

PHOTO = Path(__file__).parents[1] / "data" / "camera" / "DSCN0010.jpg"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
PASSWORD = "correct horse battery"
# Whether every pixel of the upload page's preview has its three channels within 2 of each other.
_PREVIEW_IS_GREY = """() => {
  const c = document.querySelector(".previews canvas");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  for (let i = 0; i < d.length; i += 4) {
    if (Math.abs(d[i] - d[i + 1]) > 2 || Math.abs(d[i + 1] - d[i + 2]) > 2) return false;
  }
  return true;
}"""

# With CI=true a missing Chromium fails the run (.ci/run installs it); elsewhere it skips.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (.ci/run installs it)",
)


class Person:
    """One browser context (its own cookies) with one page, which must log no error."""

    def __init__(self, browser: Browser, base: str, viewport: dict[str, int]) -> None:
        self.context = browser.new_context(viewport=viewport, base_url=base)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.context.close()
        assert self.errors == [], self.errors


People = Callable[[dict[str, int]], Person]


@pytest.fixture
def people(browser: Browser, server: Server) -> Iterator[People]:
    made: list[Person] = []

    def person(viewport: dict[str, int] = DESKTOP) -> Person:
        made.append(Person(browser, server.base, viewport))
        return made[-1]

    yield person
    for p in made:
        p.close()


def shot(page: Page, name: str) -> None:
    """Save this screen at both widths when screenshots are asked for."""
    folder = os.environ.get("GLIMPSE_SCREENSHOTS")
    if not folder:
        return
    size = page.viewport_size
    for viewport in (PHONE, DESKTOP):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(150)
        page.screenshot(path=str(Path(folder) / f"{name}-{viewport['width']}.png"))
    if size:
        page.set_viewport_size(size)


def assert_preview_is_the_servers(page: Page, name: str) -> None:
    """The upload page's preview against apply_filter run here on the photo at the same size:
    close overall, and in the outer band where a vignette darkens."""
    shown = page.evaluate(
        """() => {
      const c = document.querySelector(".previews canvas");
      return { w: c.width, h: c.height,
               data: Array.from(c.getContext("2d").getImageData(0, 0, c.width, c.height).data) };
    }"""
    )
    w, h, data = shown["w"], shown["h"], shown["data"]
    photo = ImageOps.exif_transpose(Image.open(PHOTO)).convert("RGB")
    served = apply_filter(photo.resize((w, h), Image.Resampling.BILINEAR), name).load()
    assert served is not None
    total = edge = edge_count = 0.0
    for y in range(h):
        for x in range(w):
            i = 4 * (x + y * w)
            diff = sum(abs(a - b) for a, b in zip(data[i : i + 3], served[x, y], strict=True)) / 3
            total += diff
            if min(x, y, w - 1 - x, h - 1 - y) < min(w, h) // 10:
                edge += diff
                edge_count += 1
    # Resampling differs a little between Chromium and Pillow; a dropped step would not.
    assert total / (w * h) < 8, total / (w * h)
    assert edge / edge_count < 10, edge / edge_count


def sign_up(page: Page, username: str) -> None:
    page.goto("/")
    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="New post")
    ).to_be_visible()


def share_post(page: Page, caption: str, filter_label: str | None = None) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name="New post").click()
    page.get_by_label("Photos").set_input_files(str(PHOTO))
    if filter_label:
        page.get_by_label(filter_label, exact=True).check()
    page.get_by_label("Caption").fill(caption)
    page.get_by_label(re.compile("Alt text for photo 1")).fill("A street at dusk")
    page.get_by_role("button", name="Share").click()
    # The page waits for the photos to be processed, then shows the author's profile. (Not
    # /new itself, which the pattern of a username also matches; processing on a loaded
    # machine takes longer than expect's 5 s.)
    page.wait_for_url(re.compile(r"/(?!new$)[a-z0-9_.]+$"), timeout=60_000)
    expect(page.locator(".grid img").first).to_be_visible(timeout=60_000)


def token(server: Server, username: str) -> str:
    response = httpx.post(
        f"{server.base}/api/v1/auth/token", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200
    return str(response.json()["access_token"])


def test_two_people_post_follow_like_comment_and_watch_stories(
    people: People, server: Server
) -> None:
    ana = people(PHONE)
    ben = people(DESKTOP)
    ana.page.goto("/")
    shot(ana.page, "welcome")
    sign_up(ana.page, "ana")

    # Ana shares a photo with a filter, previewed before upload.
    ana.page.get_by_role("navigation", name="Main").get_by_role("link", name="New post").click()
    ana.page.get_by_label("Photos").set_input_files(str(PHOTO))
    filters = httpx.get(
        f"{server.base}/api/v1/filters",
        headers={"Authorization": f"Bearer {token(server, 'ana')}"},
    ).json()["items"]
    label = next(f["label"] for f in filters if f["name"] != "normal")
    expect(ana.page.locator(".previews canvas")).to_have_count(1)
    # The preview is the server's filter applied in the browser: Moon is black and white.
    ana.page.get_by_label("Moon", exact=True).check()
    ana.page.wait_for_function(_PREVIEW_IS_GREY)
    # The strongest vignette: the preview matches the server's own filter, corners included.
    strongest = max(filters, key=lambda f: f["preview"]["vignette"])
    ana.page.get_by_label(strongest["label"], exact=True).check()
    ana.page.wait_for_function(f"() => !({_PREVIEW_IS_GREY})()")
    ana.page.wait_for_timeout(300)
    assert_preview_is_the_servers(ana.page, strongest["name"])
    ana.page.get_by_label(label, exact=True).check()
    shot(ana.page, "new-post")
    ana.page.goto("/")
    share_post(ana.page, "Evening walk <b>not bold</b>", label)
    shot(ana.page, "profile")

    # Ben follows her, sees the post in his feed, likes it and comments.
    sign_up(ben.page, "ben")
    ben.page.goto("/ana")
    ben.page.get_by_role("button", name="Follow").click()
    expect(ben.page.get_by_role("button", name="Following")).to_be_visible()
    ben.page.get_by_role("link", name="Home").click()
    # A new follow's posts reach the feed by a job, within seconds (API.md): look again until then.
    for _ in range(50):
        if ben.page.locator("article.post").count():
            break
        ben.page.wait_for_timeout(200)
        ben.page.reload()
    post = ben.page.locator("article.post").first
    # The caption is text, never markup.
    expect(post.locator(".caption")).to_contain_text("Evening walk <b>not bold</b>")
    image = post.locator("picture img")
    expect(image).to_have_attribute("alt", "A street at dusk")
    assert re.search(r" 320w, .* 640w$", image.get_attribute("srcset") or "")
    assert post.locator('picture source[type="image/webp"]').count() == 1
    post.get_by_role("button", name="Like", exact=True).click()
    expect(post.get_by_role("button", name="Unlike")).to_be_visible()
    expect(post.locator(".like-count")).to_have_text("1 like")
    # A comment with markup, added by the script in place: shown as the text it is.
    post.get_by_label("Add a comment").fill("Lovely light! <b>x</b><img src=x onerror=alert(1)>")
    post.get_by_label("Add a comment").press("Enter")
    comment = post.locator(".comment-list li").last
    expect(comment).to_contain_text("Lovely light! <b>x</b><img src=x onerror=alert(1)>")
    assert comment.locator("b, img").count() == 0
    shot(ben.page, "feed")

    # What the browser did, the API shows.
    headers = {"Authorization": f"Bearer {token(server, 'ana')}"}
    post_id = post.get_attribute("data-post-id")
    seen = httpx.get(f"{server.base}/api/v1/posts/{post_id}", headers=headers).json()
    assert seen["like_count"] == 1 and seen["comment_count"] == 1
    assert seen["media"][0]["alt_text"] == "A street at dusk"

    # Ben shares a story; Ana follows him and watches it; Ben sees her among its viewers.
    ben.page.get_by_label("Your story").set_input_files(str(PHOTO))
    ben.page.get_by_role("button", name="Share to story").click()
    expect(ben.page.get_by_role("button", name="View your story")).to_be_visible(timeout=60_000)
    ana.page.goto("/ben")
    ana.page.get_by_role("button", name="Follow").click()
    expect(ana.page.get_by_role("button", name="Following")).to_be_visible()
    ana.page.get_by_role("link", name="Home").click()
    ring = ana.page.get_by_role("button", name="ben's story")
    expect(ring).to_have_class(re.compile("unseen"))
    ring.click()
    viewer = ana.page.get_by_role("dialog", name="Story")
    expect(viewer).to_be_visible()
    expect(viewer.locator(".story-stage img")).to_be_visible()
    expect(viewer.locator(".bars span")).to_have_count(1)
    shot(ana.page, "story")
    ana.page.keyboard.press("Escape")
    expect(viewer).to_be_hidden()
    expect(ring).not_to_have_class(re.compile("unseen"))

    ben.page.reload()
    ben.page.get_by_role("button", name="View your story").click()
    ben.page.get_by_role("button", name="Viewers").click()
    expect(ben.page.locator(".viewers")).to_contain_text("ana")
    ben.page.keyboard.press("Escape")

    # Ben keeps the story in a highlight; his profile shows it to Ana, and it plays.
    ben_headers = {"Authorization": f"Bearer {token(server, 'ben')}"}
    [story] = httpx.get(f"{server.base}/api/v1/users/ben/stories", headers=ben_headers).json()[
        "items"
    ]
    created = httpx.post(
        f"{server.base}/api/v1/me/highlights",
        headers=ben_headers,
        json={"title": "Autumn", "story_ids": [story["id"]]},
    )
    assert created.status_code == 201
    ana.page.goto("/ben")
    ana.page.get_by_role("button", name="Autumn").click()
    expect(viewer).to_be_visible()
    expect(viewer.locator(".story-stage img")).to_be_visible()
    ana.page.keyboard.press("ArrowRight")  # past the last story: the viewer closes
    expect(viewer).to_be_hidden()


def test_a_private_account_is_hidden_until_its_owner_accepts(
    people: People, server: Server
) -> None:
    cleo = people(DESKTOP)
    dan = people(PHONE)
    sign_up(cleo.page, "cleo")
    cleo.page.get_by_role("link", name="Profile").click()
    cleo.page.get_by_role("link", name="Edit profile").click()
    cleo.page.get_by_label("Display name").fill("Cleo <script>alert(1)</script>")
    cleo.page.get_by_label("Bio").fill("Photos of my garden")
    cleo.page.get_by_label("Private account").check()
    cleo.page.get_by_role("button", name="Save").click()
    expect(cleo.page.locator(".display-name")).to_have_text("Cleo <script>alert(1)</script>")
    share_post(cleo.page, "Tomatoes")

    sign_up(dan.page, "dan")
    dan.page.goto("/cleo")
    expect(dan.page.get_by_text("This account is private")).to_be_visible()
    assert dan.page.locator(".grid img").count() == 0
    shot(dan.page, "private-profile")
    dan.page.get_by_role("button", name="Follow").click()
    expect(dan.page.get_by_role("button", name="Requested")).to_be_visible()
    dan.page.get_by_role("link", name="Home").click()
    expect(dan.page.locator("article.post")).to_have_count(0)

    cleo.page.get_by_role("link", name="Follow requests").click()
    row = cleo.page.locator(".people li", has_text="dan")
    row.get_by_role("button", name="Accept").click()
    expect(row).to_contain_text("Accepted")

    dan.page.goto("/cleo")
    expect(dan.page.get_by_text("This account is private")).to_have_count(0)
    expect(dan.page.locator(".grid img")).to_have_count(1)
    expect(dan.page.get_by_role("button", name="Following")).to_be_visible()


def test_sign_out_and_back_in_and_wrong_passwords(people: People) -> None:
    eve = people(PHONE)
    sign_up(eve.page, "eve")
    eve.page.get_by_role("button", name="Sign out").click()
    expect(eve.page.get_by_role("link", name="Sign in").first).to_be_visible()
    eve.page.goto("/new")
    expect(eve.page).to_have_url(re.compile("/signin$"))
    eve.page.get_by_label("Username").fill("eve")
    eve.page.get_by_label("Password").fill("not the password")
    eve.page.get_by_role("button", name="Sign in").click()
    expect(eve.page.get_by_role("alert")).to_have_text("Wrong username or password.")
    # The refused form comes back as a 401 page, which Chromium notes; nothing else may be.
    assert eve.errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    eve.errors.clear()
    eve.page.get_by_label("Password").fill(PASSWORD)
    eve.page.get_by_role("button", name="Sign in").click()
    expect(
        eve.page.get_by_role("navigation", name="Main").get_by_role("link", name="New post")
    ).to_be_visible()


def test_the_feed_scrolls_past_its_first_page(people: People, server: Server) -> None:
    # 23 posts made through the API (the same use case the page calls), then read in the
    # browser: 20 on the first page, the rest once the end of the page is reached.
    created = httpx.post(
        f"{server.base}/api/v1/accounts", json={"username": "fay", "password": PASSWORD}
    )
    assert created.status_code == 201
    headers = {"Authorization": f"Bearer {token(server, 'fay')}"}
    ids = []
    source = ImageOps.exif_transpose(Image.open(PHOTO)).convert("RGB")
    for n in range(23):
        # A different photo each (a crop of the test photograph): see the closing note of
        # stop 24 on 404s once seen for a variant that 23 posts of identical bytes shared.
        photo = io.BytesIO()
        source.crop((n, n, source.width - 23 + n, source.height - 23 + n)).save(photo, "JPEG")
        response = httpx.post(
            f"{server.base}/api/v1/posts",
            headers=headers,
            files={"file": ("photo.jpg", photo.getvalue(), "image/jpeg")},
            # The last page comes through the script: its captions must stay text too.
            data={"caption": f"post {n}" + (" <i>x</i>" if n == 0 else "")},
            timeout=30,
        )
        assert response.status_code == 202
        ids.append(response.json()["id"])
    for post_id in ids:
        for _ in range(600):
            status = httpx.get(f"{server.base}/api/v1/posts/{post_id}", headers=headers).json()
            if status["status"] != "processing":
                break
            time.sleep(0.1)
        assert status["status"] == "ready"

    fay = people(PHONE)
    fay.page.goto("/signin")
    fay.page.get_by_label("Username").fill("fay")
    fay.page.get_by_label("Password").fill(PASSWORD)
    fay.page.get_by_role("button", name="Sign in").click()
    fay.page.get_by_role("link", name="Latest").click()
    posts = fay.page.locator("article.post")
    expect(posts).to_have_count(20)
    fay.page.locator(".sentinel").scroll_into_view_if_needed()
    expect(posts).to_have_count(23)
    captions = posts.locator(".caption").all_text_contents()
    expected = [f"post {n}" + (" <i>x</i>" if n == 0 else "") for n in reversed(range(23))]
    assert [c.split(" ", 1)[1] for c in captions] == expected
    assert posts.locator(".caption i").count() == 0

    # The profile's grid shows 18, then the rest as one scrolls.
    fay.page.get_by_role("link", name="Profile").click()
    cells = fay.page.locator(".grid li")
    # (18 come with the page, tests/api/test_web_pages.py; on a phone the rest may already be
    # on their way as it loads.)
    fay.page.locator(".sentinel").scroll_into_view_if_needed()
    expect(cells).to_have_count(23)
    expect(cells.last.locator("img")).to_have_attribute("alt", "")


def test_carousels_step_rejected_files_are_explained_and_keys_work(
    people: People, server: Server
) -> None:
    gus = people(DESKTOP)
    sign_up(gus.page, "gus")
    headers = {"Authorization": f"Bearer {token(server, 'gus')}"}
    photos = [("file", (f"p{n}.jpg", PHOTO.read_bytes(), "image/jpeg")) for n in range(2)]
    post = httpx.post(
        f"{server.base}/api/v1/posts",
        headers=headers,
        files=photos,
        data={"alt_text": ["first", "second"]},
        timeout=30,
    ).json()
    for _ in range(600):
        got = httpx.get(f"{server.base}/api/v1/posts/{post['id']}", headers=headers).json()
        if got["status"] != "processing":
            break
        time.sleep(0.1)

    # A carousel steps with its buttons (and swipes: it is a scroll-snapped track).
    gus.page.goto("/")
    card = gus.page.locator("article.post").first
    expect(card.get_by_role("button", name="Previous photo")).to_be_hidden()
    card.get_by_role("button", name="Next photo").click()
    expect(card.get_by_role("button", name="Previous photo")).to_be_visible()
    expect(card.get_by_role("button", name="Next photo")).to_be_hidden()
    expect(card.locator(".dots span").nth(1)).to_have_class("on")

    # Keyboard only: the like button is reached with Tab and pressed with Enter.
    like = card.get_by_role("button", name="Like", exact=True)
    like.focus()
    gus.page.keyboard.press("Enter")
    expect(card.get_by_role("button", name="Unlike")).to_be_focused()

    # A file that is no photo is refused with the server's own message, and nothing is posted.
    gus.page.get_by_role("navigation", name="Main").get_by_role("link", name="New post").click()
    gus.page.get_by_label("Photos").set_input_files(
        files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"just some text\n"}]
    )
    gus.page.get_by_role("button", name="Share").click()
    expect(gus.page.locator(".upload-status")).to_have_text(
        "notes.jpg is not a JPEG, PNG, WebP, HEIC or GIF image, nor an MP4, MOV or WebM video."
    )
    assert gus.errors == [
        "Failed to load resource: the server responded with a status of 415 (Unsupported Media Type)"
    ]
    gus.errors.clear()
    mine = httpx.get(f"{server.base}/api/v1/users/gus/posts", headers=headers).json()
    assert len(mine["items"]) == 1
