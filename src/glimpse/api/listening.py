"""The listening sockets of `glimpse serve`, bound before anything else is done.

uvicorn binds its address only after the app's start-up, and `glimpse serve` does even more
before that: it migrates the database, makes the secret key and starts its worker processes. A
second serve started by mistake on a port already taken (a second unit, a restart that raced
the old process) did all of that against the data folder of the one running, its workers
taking jobs, and only then failed to bind. Bound first, a taken address stops the command
before it touches anything.

Bound, not listening: until uvicorn listens on them (after start-up), connections are refused
as before, so a proxy tries another process rather than waiting on one still starting. On
Linux, binding an address that another socket listens on fails even with SO_REUSEADDR, which
is set as uvicorn sets it (a restart must not wait out the old process's TIME_WAIT).
"""

from __future__ import annotations

import socket


def bind_listeners(host: str, port: int) -> list[socket.socket]:
    """One bound socket per address `host` resolves to, as asyncio's create_server would make
    them (so `localhost` still means both loopbacks). Raises OSError when one is taken."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    bound: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # Each family on a socket of its own, as asyncio does.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError:
        for sock in bound:
            sock.close()
        raise
    return bound
