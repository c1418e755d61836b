"""Every operation of the OpenAPI document, fuzzed by schemathesis against a real `glimpse serve`:
whatever it is sent, valid or not, it answers below 500, and every error has API.md's body."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from glimpse.app import create_app
from glimpse.config import Settings
from tests.servers import Server

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
    server = Server(data_dir, "--workers", "1", env={"GLIMPSE_MAX_IMAGE_BYTES": "2000000"})
    try:
        yield Session(server)
        assert server.stop() == 0
    finally:
        server.close()  # whatever failed, no server outlives the tests


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_gets_a_server_error(case: Any, session: Session) -> None:
    response = case.call(base_url=session.server.base, headers=session.headers, timeout=30)
    case.validate_response(
        response,
        checks=[
            not_a_server_error,
            response_schema_conformance,
            status_code_conformance,
            content_type_conformance,
        ],
        headers=session.headers,
    )
    assert response.status_code < 500, (case.method, case.formatted_path, response.text)
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
    if case.method == "DELETE" and case.path == "/api/v1/auth/token":
        session.sign_in()
