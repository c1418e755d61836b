"""GET /media/{key}, the origin a CDN pulls: headers, conditional and range requests, and that
nothing but stored variants is ever served (API.md, "Media origin")."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from glimpse.media import origin
from glimpse.posts import service as posts_service
from glimpse.worker import drain
from tests.conftest import Glimpse, assert_error, jpeg_bytes


async def _publish(glimpse: Glimpse, headers: dict[str, str], photo: bytes) -> Any:
    """Upload one photo, process it, and return the post as its author sees it."""
    response = await glimpse.upload(headers, files=[("p.jpg", photo)])
    await glimpse.run_jobs()
    post_id = response.json()["id"]
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
    assert post["status"] == "ready"
    return post


@pytest.fixture
async def variant(glimpse: Glimpse) -> dict[str, Any]:
    """The w320 JPEG of a freshly processed post, with the full bytes the origin serves."""
    headers = await glimpse.signup("alice")
    post = await _publish(glimpse, headers, jpeg_bytes((400, 300)))
    found = next(
        v
        for v in post["media"][0]["variants"]
        if v["name"] == "w320" and v["content_type"] == "image/jpeg"
    )
    full = await glimpse.client.get(found["url"])
    assert full.status_code == 200
    return {**found, "body": full.content, "response": full, "post": post, "headers": headers}


async def test_variant_is_served_with_caching_and_safety_headers(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    response: httpx.Response = variant["response"]
    body: bytes = variant["body"]
    assert variant["url"].startswith("/media/v/")
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["content-length"] == str(len(body))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    etag = response.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    assert body.startswith(b"\xff\xd8\xff")
    # Content-addressed: the key names the bytes.
    assert hashlib.sha256(body).hexdigest() in variant["url"]
    webp = next(
        v for v in variant["post"]["media"][0]["variants"] if v["content_type"] == "image/webp"
    )
    served = await glimpse.client.get(webp["url"])
    assert served.headers["content-type"] == "image/webp"
    assert served.content[:4] == b"RIFF" and served.content[8:12] == b"WEBP"


async def test_matching_if_none_match_is_304_without_a_body(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    etag = variant["response"].headers["etag"]
    for header in [etag, f"W/{etag}", f'"other", {etag}', "*"]:
        response = await glimpse.client.get(variant["url"], headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == etag
    response = await glimpse.client.get(variant["url"], headers={"If-None-Match": '"other"'})
    assert response.status_code == 200
    assert response.content == variant["body"]


async def test_byte_ranges(glimpse: Glimpse, variant: dict[str, Any]) -> None:
    body: bytes = variant["body"]
    size = len(body)
    url = variant["url"]

    response = await glimpse.client.get(url, headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-99/{size}"
    assert response.headers["content-length"] == "100"
    assert response.headers["content-type"] == "image/jpeg"
    assert response.content == body[:100]

    response = await glimpse.client.get(url, headers={"Range": "bytes=-10"})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {size - 10}-{size - 1}/{size}"
    assert response.content == body[-10:]

    response = await glimpse.client.get(url, headers={"Range": "bytes=100-"})
    assert response.status_code == 206
    assert response.content == body[100:]

    # A last position past the end is clipped to the end.
    response = await glimpse.client.get(url, headers={"Range": f"bytes={size - 5}-{size + 1000}"})
    assert response.status_code == 206
    assert response.content == body[-5:]

    # A suffix longer than the file is the whole file.
    response = await glimpse.client.get(url, headers={"Range": f"bytes=-{size + 1000}"})
    assert response.status_code == 206
    assert response.content == body


async def test_range_past_the_end_is_416(glimpse: Glimpse, variant: dict[str, Any]) -> None:
    size = len(variant["body"])
    for header in [f"bytes={size}-", f"bytes={size + 100}-{size + 200}", "bytes=-0"]:
        response = await glimpse.client.get(variant["url"], headers={"Range": header})
        assert_error(response, 416)
        assert response.headers["content-range"] == f"bytes */{size}", header
        # An error is not the immutable file: no CDN may keep it for a year.
        assert "immutable" not in response.headers.get("cache-control", "")


async def test_ranges_not_understood_get_the_whole_file(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    # "bytes=50-10" is no valid range at all (last before first): RFC 9110 says ignore it.
    for header in ["bytes=0-1,5-6", "items=0-5", "bytes=", "bytes=a-b", "garbage", "bytes=50-10"]:
        response = await glimpse.client.get(variant["url"], headers={"Range": header})
        assert response.status_code == 200, header
        assert response.content == variant["body"]


async def test_range_with_a_huge_number_is_not_a_server_error(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    body: bytes = variant["body"]
    # Python refuses to parse integers of more than 4,300 digits by default.
    for header in ["bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000]:
        response = await glimpse.client.get(variant["url"], headers={"Range": header})
        assert response.status_code in (200, 206), response.status_code
        assert response.content == body
    response = await glimpse.client.get(
        variant["url"], headers={"Range": "bytes=" + "9" * 5000 + "-"}
    )
    assert response.status_code in (200, 416), response.status_code


async def test_if_range_with_another_validator_sends_the_whole_file(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    etag = variant["response"].headers["etag"]
    response = await glimpse.client.get(
        variant["url"], headers={"Range": "bytes=0-9", "If-Range": '"stale"'}
    )
    assert response.status_code == 200
    assert response.content == variant["body"]
    response = await glimpse.client.get(
        variant["url"], headers={"Range": "bytes=0-9", "If-Range": etag}
    )
    assert response.status_code == 206
    assert response.content == variant["body"][:10]


# The cache keeps who may see the key from the fixture's GET, but not the file's bytes: only
# answering could read them.
@pytest.mark.parametrize(
    "settings", [{"origin_cache_ttl_seconds": 60, "origin_cache_bytes": 0}], indirect=True
)
async def test_head_answers_headers_without_a_body(
    glimpse: Glimpse, variant: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_reading(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("a HEAD must not read the file")

    monkeypatch.setattr(origin, "_read", no_reading)
    response = await glimpse.client.head(variant["url"])
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == str(len(variant["body"]))
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["etag"] == variant["response"].headers["etag"]
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    response = await glimpse.client.head(variant["url"], headers={"Range": "bytes=0-99"})
    assert response.status_code == 206
    assert response.content == b""
    assert response.headers["content-length"] == "100"


async def test_unknown_keys_and_originals_are_404(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    digest = "ab" + "0" * 62
    async with glimpse.container.db.read() as s:
        original_key = (await s.execute(text("select original_key from media"))).scalar_one()
    assert original_key.startswith("originals/")
    # The original really is in the store: it is refused, not missing.
    assert await glimpse.container.storage.size(original_key) is not None
    keys = [
        f"v/ab/{digest}.jpg",  # well-formed, not stored
        f"v/cd/{digest}.jpg",  # prefix does not match the digest
        variant["url"].removeprefix("/media/").upper(),
        variant["url"].removeprefix("/media/").replace(".jpg", ".webp"),
        variant["url"].removeprefix("/media/").replace(".jpg", ".png"),
        original_key,
        "",
        "readyz/probe",
        ".staging",
        "glimpse.db",
        "secret_key",
        "v/",
    ]
    for key in keys:
        for method in ("GET", "HEAD"):
            response = await glimpse.client.request(method, f"/media/{key}")
            assert response.status_code == 404, (method, key)
            if method == "GET":
                assert_error(response, 404)


async def raw_get(app: Any, path: str, raw_path: bytes) -> tuple[int, bytes]:
    """Call the ASGI app directly: httpx would normalise the "../" away before sending."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"glimpse.test")],
        "server": ("glimpse.test", 80),
        "client": ("127.0.0.1", 12345),
    }
    sent: list[dict[str, Any]] = []
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


async def test_path_traversal_never_reaches_outside_the_store(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    data_dir = glimpse.container.settings.data_dir
    (data_dir / "secret_key").write_text("top-secret-key-material")
    secrets = [b"top-secret-key-material", b"root:"]
    database = data_dir / "glimpse.db"
    if database.exists():  # (the embedded default's; on PostgreSQL there is no such file)
        secrets.append(database.read_bytes()[:16])  # "SQLite format 3\0"
    app = glimpse.client._transport.app  # type: ignore[attr-defined]
    paths = [
        ("/media/../glimpse.db", b"/media/../glimpse.db"),
        ("/media/v/../../glimpse.db", b"/media/v/../../glimpse.db"),
        ("/media/../secret_key", b"/media/%2e%2e/secret_key"),
        ("/media/%2e%2e/secret_key", b"/media/%252e%252e/secret_key"),
        ("/media/v/../../../../../../etc/passwd", b"/media/v/../../../../../../etc/passwd"),
        ("/media//etc/passwd", b"/media//etc/passwd"),
        ("/media/v/ab/../../../glimpse.db", b"/media/v/ab/../../../glimpse.db"),
        ("/media/..\\glimpse.db", b"/media/..%5cglimpse.db"),
        ("/media/.staging/", b"/media/.staging/"),
        ("/media/v/ab/" + "a" * 64 + ".jpg/../../../../glimpse.db", b"/media/v/x"),
        ("/media/\x00", b"/media/%00"),
    ]
    for path, raw_path in paths:
        status, body = await raw_get(app, path, raw_path)
        assert status == 404, (path, status)
        for secret in secrets:
            assert secret not in body, path


async def _url_shown_now(glimpse: Glimpse, variant: dict[str, Any]) -> str:
    """The variant's URL as its post shows it to its author now."""
    post_id, headers = variant["post"]["id"], variant["headers"]
    post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
    [url] = [
        v["url"]
        for v in post["media"][0]["variants"]
        if (v["name"], v["content_type"]) == (variant["name"], variant["content_type"])
    ]
    return str(url)


async def test_media_of_a_private_account_needs_its_signed_url_and_is_never_cached_publicly(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    headers = variant["headers"]
    response = await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    assert response.status_code == 200
    # The plain URL, which anyone who once saw the public post may still have, no longer works.
    assert_error(await glimpse.client.get(variant["url"]), 404, "media_not_found")
    signed = await _url_shown_now(glimpse, variant)
    assert signed.startswith(variant["url"] + "?exp=")
    response = await glimpse.client.get(signed)
    assert response.status_code == 200
    assert response.content == variant["body"]
    assert response.headers["cache-control"] == "private, no-cache"

    response = await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": False})
    assert await _url_shown_now(glimpse, variant) == variant["url"]
    for url in (variant["url"], signed):  # public again: a signature is not needed, nor harmful
        response = await glimpse.client.get(url)
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


async def test_private_media_with_a_forged_or_expired_signature_is_404(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    headers = variant["headers"]
    await glimpse.client.patch("/api/v1/me", headers=headers, json={"is_private": True})
    signed = await _url_shown_now(glimpse, variant)
    assert (await glimpse.client.get(signed)).status_code == 200
    plain, query = signed.split("?")
    params = dict(part.split("=", 1) for part in query.split("&"))
    exp, sig, v = params["exp"], params["sig"], params["v"]
    # Another last character, always: replacing it with "A" forged nothing whenever the real
    # signature ended in "A" (a whole hour in four, as the expiry is rounded to the hour).
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert flipped != sig
    assert (await glimpse.client.get(f"{plain}?exp={exp}&v={v}&sig={sig}")).status_code == 200
    for url in (
        f"{plain}?exp={int(exp) + 3600}&v={v}&sig={sig}",  # a later expiry, same signature
        f"{plain}?exp={exp}&v={v}&sig={flipped}",
        f"{plain}?exp={exp}&v={int(v) + 1}&sig={sig}",  # another viewer
        f"{plain}?exp={exp}&sig={sig}",  # no viewer
        f"{plain}?exp={exp}&v={v}",
        f"{plain}?v={v}&sig={sig}",
        f"{plain}?exp=1&v={v}&sig={sig}",
        f"{plain}?exp=%F0%9F%93%B7&v=%F0%9F%93%B7&sig=%F0%9F%93%B7",
        f"{plain}?exp={'9' * 40}&v={v}&sig={sig}",
        f"{plain}?exp={exp}&v={'9' * 40}&sig={sig}",
    ):
        assert_error(await glimpse.client.get(url), 404, "media_not_found")
    # Signed for another key, it opens nothing else.
    other_key = plain.rsplit("/", 1)[0] + "/" + "ab" * 32 + ".jpg"
    assert_error(await glimpse.client.get(f"{other_key}?exp={exp}&v={v}&sig={sig}"), 404)


async def test_media_of_a_post_still_processing_is_signed_private_and_not_public(
    glimpse: Glimpse,
) -> None:
    # A two-photo post whose first photo is done: its variants exist, the post is unfinished.
    headers = await glimpse.signup("alice")
    photos = [("a.jpg", jpeg_bytes((400, 300))), ("b.jpg", jpeg_bytes((300, 400), (9, 9, 9)))]
    post_id = (await glimpse.upload(headers, files=photos)).json()["id"]
    for _ in range(10):
        await drain(glimpse.container, max_jobs=1)
        post = (await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)).json()
        urls = [v["url"] for m in post["media"] for v in m["variants"]]
        if urls:
            break
    assert post["status"] == "processing" and urls, post
    for url in urls:
        plain, _, query = url.partition("?")
        assert query.startswith("exp=") and "&sig=" in query, url
        assert_error(await glimpse.client.get(plain), 404, "media_not_found")
        served = await glimpse.client.get(url)
        assert served.status_code == 200
        assert served.headers["cache-control"] == "private, no-cache"


def _count_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the origin asks the database about from now on."""
    asked: list[str] = []
    real_lookup = posts_service.media_visibility

    async def counting(session: Any, key: str) -> str | None:
        asked.append(key)
        return await real_lookup(session, key)

    monkeypatch.setattr(posts_service, "media_visibility", counting)
    return asked


@pytest.mark.parametrize("settings", [{"origin_cache_ttl_seconds": 60}], indirect=True)
async def test_hot_media_is_answered_without_asking_the_database_again(
    glimpse: Glimpse, variant: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fixture fetched the variant once already: who may see it is known now.
    lookups = _count_lookups(monkeypatch)
    for _ in range(5):
        response = await glimpse.client.get(variant["url"])
        assert response.content == variant["body"]
    assert lookups == []


async def test_a_deleted_post_media_is_404_at_once_and_the_404_is_never_cached(
    glimpse: Glimpse, variant: dict[str, Any]
) -> None:
    response = await glimpse.client.delete(
        f"/api/v1/posts/{variant['post']['id']}", headers=variant["headers"]
    )
    assert response.status_code == 204
    # The files wait for the purge job; the origin already refuses them. And no cache may
    # keep that 404: the same key comes back if anyone posts the same bytes again.
    assert glimpse.stored_files()
    for url in (variant["url"], "/media/v/ab/" + "ab" + "0" * 62 + ".jpg", "/media/nope"):
        response = await glimpse.client.get(url)
        assert_error(response, 404, "media_not_found")
        assert response.headers["cache-control"] == "no-store", url


@pytest.mark.parametrize("settings", [{"origin_cache_ttl_seconds": 60}], indirect=True)
async def test_a_repost_of_a_purged_photo_is_served_at_once(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await glimpse.signup("alice")
    photo = jpeg_bytes((400, 300), (90, 20, 160))
    post = await _publish(glimpse, headers, photo)
    url = post["media"][0]["variants"][0]["url"]
    response = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert response.status_code == 204
    await glimpse.run_jobs()  # the purge
    assert not glimpse.stored_files()
    assert_error(await glimpse.client.get(url), 404)  # now remembered as nobody's

    # A key nobody has is answered from that memory, with one stat and no database lookup...
    async def no_lookup(*args: Any) -> str | None:
        raise AssertionError("asked the database again")

    with monkeypatch.context() as patched:
        patched.setattr(posts_service, "media_visibility", no_lookup)
        assert_error(await glimpse.client.get(url), 404)

    # ...until the same bytes are posted again: then the new post's media is served at once.
    again = await _publish(glimpse, headers, photo)
    assert again["media"][0]["variants"][0]["url"] == url
    assert (await glimpse.client.get(url)).status_code == 200


@pytest.mark.parametrize(
    "settings", [{"origin_cache_ttl_seconds": 60, "media_gc_delay_seconds": 3600}], indirect=True
)
async def test_media_of_a_deleted_post_waiting_for_its_purge_is_refused_from_memory(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files stay until the purge; a CDN forwards every request for them (404s are not
    # cached), and each must not cost a database lookup.
    headers = await glimpse.signup("alice")
    post = await _publish(glimpse, headers, jpeg_bytes((400, 300)))
    url = post["media"][0]["variants"][0]["url"]
    deleted = await glimpse.client.delete(f"/api/v1/posts/{post['id']}", headers=headers)
    assert deleted.status_code == 204
    assert glimpse.stored_files()
    assert_error(await glimpse.client.get(url), 404)

    lookups = _count_lookups(monkeypatch)
    for _ in range(5):
        assert_error(await glimpse.client.get(url), 404)
    assert lookups == []
