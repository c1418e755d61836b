"""`glimpse serve`'s sockets, bound before its start-up (api/listening.py)."""

from __future__ import annotations

import socket

import pytest

from glimpse.api.listening import bind_listeners


def test_an_address_another_process_listens_on_cannot_be_bound() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            bind_listeners("127.0.0.1", port)


def test_a_free_address_is_bound_but_refuses_connections_until_served() -> None:
    # Not listening yet: a proxy is refused (and tries elsewhere) while start-up runs.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sockets = bind_listeners("127.0.0.1", port)
    try:
        assert [s.getsockname() for s in sockets] == [("127.0.0.1", port)]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        sockets[0].listen()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        for s in sockets:
            s.close()
