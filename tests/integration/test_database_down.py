"""A PostgreSQL server that stops answering: 503 with Retry-After, never a 500. (SQLite's
own trouble, a busy or full disk, is tests/api/test_storage_trouble.py's.)"""

from __future__ import annotations

import pytest

from glimpse.db.database import Database
from tests.conftest import Glimpse


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
async def test_a_database_server_that_does_not_answer_is_a_503(glimpse: Glimpse) -> None:
    headers = await glimpse.signup("alice")
    container = glimpse.container
    live = container.db
    # The server is gone: every new connection is refused.
    container.db = Database(f"postgresql://postgres@127.0.0.1:{_closed_port()}/gone")
    try:
        response = await glimpse.client.get("/api/v1/users/alice", headers=headers)
    finally:
        await container.db.dispose()
        container.db = live
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
