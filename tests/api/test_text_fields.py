"""Names, bios, captions and alt texts refuse the invisible characters that let one account
pass for another (issue 12, row 11); the rules themselves are in tests/unit/test_text.py."""

from __future__ import annotations

from tests.conftest import Glimpse, assert_error

RLO_NAME = "\u202eecila"  # displays as "alice"


async def test_a_display_name_with_a_bidi_override_is_422(glimpse: Glimpse) -> None:
    response = await glimpse.client.post(
        "/api/v1/accounts",
        json={"username": "mallory", "password": "correct horse", "display_name": RLO_NAME},
    )
    assert_error(response, 422)
    headers = await glimpse.signup("mallory")
    for field, value in (
        ("display_name", RLO_NAME),
        ("display_name", "ali\u200bce"),
        ("display_name", "al\u200dice"),
        ("display_name", "alice\U000e0061"),
        ("bio", "the real alice\u2066"),
        ("bio", "\ufeffhi"),
    ):
        response = await glimpse.client.patch("/api/v1/me", headers=headers, json={field: value})
        assert_error(response, 422)
    me = await glimpse.client.get("/api/v1/me", headers=headers)
    assert me.json()["display_name"] in ("", "mallory") and me.json()["bio"] == ""


async def test_emoji_sequences_and_scripts_that_need_joiners_are_kept(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    name = "Ada 👩\u200d💻 \U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f"
    bio = "می\u200cخواهم\n👨\u200d👩\u200d👧"
    response = await glimpse.client.patch(
        "/api/v1/me", headers=headers, json={"display_name": name, "bio": bio}
    )
    assert response.status_code == 200, response.text
    assert response.json()["display_name"] == name and response.json()["bio"] == bio


async def test_captions_and_alt_texts_with_invisible_characters_are_422(glimpse: Glimpse) -> None:
    headers = await glimpse.signup()
    for fields in (
        {"caption": "by \u202eecila"},
        {"caption": "free\u200b money"},
        {"alt_text": "a cat\U000e0020"},
        {"alt_text": "\u2067a dog"},
    ):
        response = await glimpse.upload(headers, **fields)
        assert_error(response, 422, "invalid_text")
    response = await glimpse.upload(headers, caption="🏳\ufe0f\u200d🌈 pride", alt_text="👩\u200d🚀")
    assert response.status_code == 202, response.text
    assert response.json()["caption"] == "🏳\ufe0f\u200d🌈 pride"
