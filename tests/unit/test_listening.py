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


def test_the_wildcard_address_binds_each_family_on_its_own_socket() -> None:
    # An IPv6 socket left dual-stack would take the IPv4 port as well, and the IPv4 socket
    # beside it could not be bound.
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket() as probe:
        probe.bind(("", 0))
        port = probe.getsockname()[1]
    try:
        sockets = bind_listeners("", port)
    except OSError as exc:
        if "Cannot assign" in str(exc) or "not supported" in str(exc):
            pytest.skip(f"no IPv6 address to bind: {exc}")
        raise
    try:
        assert {s.family for s in sockets} >= {socket.AF_INET}
        for sock in sockets:
            # (A restart binds at once, without waiting out the old process's TIME_WAIT.)
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
            if sock.family == socket.AF_INET6:
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()
