"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real `glimpse serve`:
whatever it is sent, valid or not, it answers below 500, with a status code, a content type and
a body that the document declares for that operation, and every error has API.md's body.

The examples differ from run to run. A failure names the seed of its run, to replay it with
`GLIMPSE_FUZZ_SEED=<seed> python -m pytest tests/fuzz` (Hypothesis also prints a
`@reproduce_failure` line for the failing example)."""

from __future__ import annotations

import io
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
from PIL import Image
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from glimpse.app import create_app
from glimpse.config import Settings
from tests.servers import Server

SEED = int(os.environ.get("GLIMPSE_FUZZ_SEED") or random.randrange(2**32))
CHOICES = random.Random(SEED)  # which cases name real things: replayed with the seed

# The document the app itself publishes; built without starting it.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


PASSWORD = "correct horse battery"


def _jpeg(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


class Session:
    """A signed-in user on a running server, signing in again when a fuzzed request signs it
    out; it has posts, stories, a highlight, a follow, a pending request, likes and comments,
    and a friend with posts and stories, so that fuzzed requests naming them reach past 404."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.credentials = {"username": "fuzz_owner", "password": PASSWORD}
        with httpx.Client(base_url=server.base, timeout=30) as client:
            friend = self._account(client, "fuzz_friend")
            self._account(client, "fuzz_private", private=True)
            owner = self._account(client, "fuzz_owner")
            friend_post = self._post(client, friend, "/api/v1/posts", (10, 200, 30))
            friend_story = self._post(client, friend, "/api/v1/stories", (30, 10, 200))
            own_post = self._post(client, owner, "/api/v1/posts", (200, 30, 10))
            own_story = self._post(client, owner, "/api/v1/stories", (90, 90, 20))
            self._wait_ready(
                client,
                [
                    (owner, f"/api/v1/posts/{own_post}"),
                    (friend, f"/api/v1/posts/{friend_post}"),
                    (owner, f"/api/v1/stories/{own_story}"),
                    (friend, f"/api/v1/stories/{friend_story}"),
                ],
            )
            for path, body in [
                ("/api/v1/users/fuzz_friend/follow", None),
                ("/api/v1/users/fuzz_private/follow", None),  # a pending request
                (f"/api/v1/posts/{friend_post}/like", None),
                (f"/api/v1/posts/{friend_post}/comments", {"text": "a comment"}),
                (f"/api/v1/stories/{friend_story}/view", None),
            ]:
                response = client.post(path, headers=owner, json=body)
                assert response.status_code < 300, (path, response.text)
            highlight = client.post(
                "/api/v1/me/highlights",
                headers=owner,
                json={"title": "fuzzed", "story_ids": [own_story]},
            )
            assert highlight.status_code == 201, highlight.text
        # Real values for path parameters: a case names one of these half the time.
        self.real = {
            "username": ["fuzz_owner", "fuzz_friend", "fuzz_private"],
            "post_id": [own_post, friend_post],
            "story_id": [own_story, friend_story],
            "highlight_id": [highlight.json()["id"]],
        }
        self.sign_in()

    @staticmethod
    def _account(client: httpx.Client, name: str, private: bool = False) -> dict[str, str]:
        credentials = {"username": name, "password": PASSWORD}
        assert client.post("/api/v1/accounts", json=credentials).status_code == 201
        token = client.post("/api/v1/auth/token", json=credentials).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        if private:
            assert client.patch("/api/v1/me", headers=headers, json={"is_private": True}).is_success
        return headers

    @staticmethod
    def _post(
        client: httpx.Client, headers: dict[str, str], path: str, color: tuple[int, int, int]
    ) -> str:
        files = [("file", ("photo.jpg", _jpeg(color), "image/jpeg"))]
        response = client.post(path, headers=headers, files=files, data={"caption": "fuzz"})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    @staticmethod
    def _wait_ready(client: httpx.Client, reads: list[tuple[dict[str, str], str]]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            statuses = [client.get(path, headers=who).json()["status"] for who, path in reads]
            if all(s == "ready" for s in statuses):
                return
            time.sleep(0.2)
        raise AssertionError(f"the fuzz session's posts did not become ready: {statuses}")

    def sign_in(self) -> None:
        with httpx.Client(base_url=self.server.base) as client:
            response = client.post("/api/v1/auth/token", json=self.credentials)
        assert response.status_code == 200, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

    def name_real_things(self, case: Any) -> None:
        """Half the time, each path parameter names something that exists (a fuzzed id almost
        never does, and would test only the 404)."""
        for name in list(case.path_parameters or {}):
            if name in self.real and CHOICES.random() < 0.5:
                case.path_parameters[name] = CHOICES.choice(self.real[name])


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    # Quotas and limits small enough that fuzzed uploads reach them too.
    env = {
        "GLIMPSE_MAX_IMAGE_BYTES": "2000000",
        # Hundreds of requests on one token: throttling would answer most of them 429 and
        # leave the routes themselves unexplored (it has tests of its own).
        "GLIMPSE_RATE_LIMITS": "off",
    }
    server = Server(data_dir, "--workers", "1", env=env)
    try:
        yield Session(server)
        assert server.stop() == 0
    finally:
        server.close()  # whatever failed, no server outlives the tests


CHECKS = [
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@schema.parametrize()
@seed(SEED)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
def test_every_answer_is_one_the_document_declares(case: Any, session: Session) -> None:
    print(f"fuzz seed {SEED}: replay with GLIMPSE_FUZZ_SEED={SEED}")  # shown on failure
    session.name_real_things(case)
    response = case.call(base_url=session.server.base, headers=session.headers, timeout=30)
    try:
        case.validate_response(response, checks=CHECKS, headers=session.headers)
        assert response.status_code < 500, (case.method, case.formatted_path, response.text)
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"}, body
            assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    finally:
        if case.method == "DELETE" and case.path == "/api/v1/auth/token":
            session.sign_in()
