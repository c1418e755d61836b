"""Requests that are not HTTP a server may pass on (what request smuggling is made of), for the
tests that the origin and the edge refuse each in the API's error shape."""

from __future__ import annotations

import json
import socket
from typing import Any

_TOKEN = b"POST /api/v1/auth/token HTTP/1.1\r\nHost: glimpse.test\r\n"

MALFORMED: dict[str, bytes] = {
    "two Content-Lengths": _TOKEN + b"Content-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "Transfer-Encoding beside Content-Length": _TOKEN
    + b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    + b"GET /healthz HTTP/1.1\r\nHost: glimpse.test\r\n\r\n",
    "an unknown Transfer-Encoding": _TOKEN + b"Transfer-Encoding: xchunked\r\n\r\n{}",
    "a chunk size that is no number": _TOKEN + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n",
    "a negative Content-Length": _TOKEN + b"Content-Length: -1\r\n\r\n",
    "a space before the colon": _TOKEN + b"Content-Length : 2\r\n\r\n{}",
    "a NUL in a header": b"GET /healthz HTTP/1.1\r\nHost: glimpse.test\r\nX-A: a\x00b\r\n\r\n",
    "a TLS handshake": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + b"\x00" * 64 + b"\r\n\r\n",
    "an unknown HTTP version": b"GET /healthz HTTP/9.9\r\nHost: glimpse.test\r\n\r\n",
}


def exchange(port: int, request: bytes, timeout: float = 30) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes; the status, headers and JSON body of the (first) answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                head, _, body = received.partition(b"\r\n\r\n")
                length = _content_length(head)
                if length is not None and len(body) >= length:
                    break
        except ConnectionResetError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    length = _content_length(head)
    return status, headers, json.loads(body[:length] if length is not None else body)


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None
