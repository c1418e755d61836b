"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real `glimpse serve`:
whatever it is sent, valid or not, it answers below 500, with a status code, a content type and
a body that the document declares for that operation, and every error has API.md's body.

The examples differ from run to run. A failure names the seed of its run, to replay it with
`GLIMPSE_FUZZ_SEED=<seed> python -m pytest tests/fuzz` (Hypothesis also prints a
`@reproduce_failure` line for the failing example)."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, seed, settings
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

# The document the app itself publishes; built without starting it.
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


class Session:
    """A signed-in user on a running server, signing in again when a fuzzed request signs it out."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.credentials = {"username": "fuzz_owner", "password": "correct horse battery"}
        with httpx.Client(base_url=server.base) as client:
            assert client.post("/api/v1/accounts", json=self.credentials).status_code == 201
        self.sign_in()

    def sign_in(self) -> None:
        with httpx.Client(base_url=self.server.base) as client:
            response = client.post("/api/v1/auth/token", json=self.credentials)
        assert response.status_code == 200, response.text
        self.headers = {"Authorization": f"Bearer {response.json()['access_token']}"}


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
