"""The web app's account page (issue 20 items 4 and 5 in a browser, without JavaScript): a data
export asked for with a form and downloaded from the link the page shows, and the account
deleted with its password, as the API does both: the same CSRF rule, the same budgets, the
same erasure."""

from __future__ import annotations

import io
import re
import zipfile
from html import unescape

import httpx
import pytest

from glimpse.accounts.sessions import SESSION_COOKIE
from tests.api.test_web_pages import PASSWORD, csrf_of, fresh_client, web_sign_up
from tests.conftest import Glimpse, assert_error


async def account_page(client: httpx.AsyncClient) -> str:
    response = await client.get("/settings/account")
    assert response.status_code == 200, response.text
    return response.text


async def test_an_export_is_asked_for_and_downloaded_from_the_page(glimpse: Glimpse) -> None:
    csrf = await web_sign_up(glimpse.client, "alice")
    page = await account_page(glimpse.client)
    assert "Make a new archive" in page and "Download your data</a>" not in page
    asked = await glimpse.client.post("/settings/export", data={"csrf_token": csrf_of(page)})
    assert asked.status_code == 303 and asked.headers["location"] == "/settings/account"
    page = await account_page(glimpse.client)
    assert "being made" in page and "Make a new archive" not in page  # one at a time
    await glimpse.run_jobs()
    page = await account_page(glimpse.client)
    link = re.search(r'<a class="button" href="([^"]+)" download>', page)
    assert link, page
    url = unescape(link.group(1))
    zipped = await glimpse.client.get(url)
    assert zipped.status_code == 200, zipped.text
    archive = zipfile.ZipFile(io.BytesIO(zipped.content))
    assert b'"username": "alice"' in archive.read("account.json")
    # The link is alice's: another browser signed in as bob gets what a forged one gets.
    async with fresh_client(glimpse) as bob:
        await web_sign_up(bob, "bob")
        assert_error(await bob.get(url), 404, "export_not_found")
    assert csrf  # (the sign-up's token; the form above used the page's own)


async def test_the_forms_need_the_sessions_csrf_token_and_a_session(glimpse: Glimpse) -> None:
    await web_sign_up(glimpse.client, "alice")
    for path, data in (("/settings/export", {}), ("/settings/delete", {"password": PASSWORD})):
        refused = await glimpse.client.post(path, data={"csrf_token": "forged", **data})
        assert refused.status_code == 403 and "This form has expired" in refused.text, path
    me = await glimpse.client.get("/api/v1/me")
    assert me.status_code == 200  # not erased
    async with fresh_client(glimpse) as visitor:
        for path in ("/settings/account", "/settings/export", "/settings/delete"):
            answer = await (visitor.get if path.endswith("account") else visitor.post)(path)
            assert answer.status_code == 303 and answer.headers["location"] == "/signin", path


@pytest.mark.parametrize("settings", [{"rate_limits": "exports=2/day"}], indirect=True)
async def test_exports_asked_for_on_the_page_spend_the_apis_budget(glimpse: Glimpse) -> None:
    await web_sign_up(glimpse.client, "alice")
    statuses = []
    for _ in range(3):
        page = await account_page(glimpse.client)
        answer = await glimpse.client.post("/settings/export", data={"csrf_token": csrf_of(page)})
        statuses.append(answer.status_code)
        await glimpse.run_jobs()
    assert statuses == [303, 303, 429], statuses
    assert "Too many exports" in unescape(answer.text)


async def test_a_wrong_password_deletes_nothing_and_the_right_one_signs_out(
    glimpse: Glimpse,
) -> None:
    await web_sign_up(glimpse.client, "alice")
    page = await account_page(glimpse.client)
    wrong = await glimpse.client.post(
        "/settings/delete", data={"csrf_token": csrf_of(page), "password": "not it at all"}
    )
    assert wrong.status_code == 401 and "Wrong password." in wrong.text
    assert (await glimpse.client.get("/api/v1/me")).status_code == 200
    deleted = await glimpse.client.post(
        "/settings/delete", data={"csrf_token": csrf_of(wrong.text), "password": PASSWORD}
    )
    assert deleted.status_code == 200 and "being deleted" in deleted.text, deleted.text
    ended = [c for c in deleted.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE)]
    assert ended and "Max-Age=0" in ended[0], ended  # the cookie is gone with the account
    assert (await glimpse.client.get("/settings/account")).headers["location"] == "/signin"
    await glimpse.run_jobs()
    async with fresh_client(glimpse) as other:
        await web_sign_up(other, "bob")
        assert (await other.get("/alice")).status_code == 404
    signin = await glimpse.client.post(
        "/api/v1/auth/token", json={"username": "alice", "password": PASSWORD}
    )
    assert_error(signin, 401, "invalid_credentials")
