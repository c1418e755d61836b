"""The RabbitMQ the tests use: the machine's broker (127.0.0.1:5672, guest/guest), in a vhost of
this test session's own, so that our queues and our forced disconnects never touch the other
engineers' tests. The vhost is made with `rabbitmqctl` (the machine runs as root); where that is
not possible, the default vhost with a queue-name prefix unique to the session.

Unreachable: with CI=true the test fails (the scale stack is mandatory there); otherwise it is
skipped, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest

HOST = os.environ.get("GLIMPSE_TEST_RABBITMQ_HOST", "127.0.0.1")
PORT = int(os.environ.get("GLIMPSE_TEST_RABBITMQ_PORT", "5672"))


def reachable(host: str = HOST, port: int = PORT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_broker() -> None:
    try:
        import aio_pika  # noqa: F401
    except ImportError:
        reason = 'aio-pika is not installed (pip install -e ".[rabbitmq]")'
    else:
        if reachable():
            return
        reason = f"RabbitMQ is not reachable at {HOST}:{PORT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the scale-stack tests are mandatory)")
    pytest.skip(reason)


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rabbitmqctl", *args], capture_output=True, text=True, timeout=60, check=False
    )


class Broker:
    def __init__(self, vhost: str | None, prefix: str) -> None:
        self.vhost = vhost
        self.prefix = prefix

    def url(self, prefix: str | None = None, **params: str) -> str:
        path = quote(self.vhost or "/", safe="")
        query = "&".join(f"{k}={v}" for k, v in {"prefix": prefix or self.prefix, **params}.items())
        return f"amqp://guest:guest@{HOST}:{PORT}/{path}?{query}"

    def drop_connections(self) -> None:
        """The broker side closes every connection to our vhost, as a broker restart does."""
        # (Without a vhost of our own: every connection to the default one, which in a test
        # run are ours.)
        result = rabbitmqctl(
            "close_all_connections", "-p", self.vhost or "/", "test: broker restart"
        )
        assert result.returncode == 0, result.stderr


@pytest.fixture(scope="session")
def broker() -> Iterator[Broker]:
    require_broker()
    token = uuid.uuid4().hex[:10]
    vhost: str | None = f"glimpse-test-{token}"
    try:
        made = (
            shutil.which("rabbitmqctl") is not None
            and not rabbitmqctl("add_vhost", str(vhost)).returncode
        )
        if made:
            rabbitmqctl("set_permissions", "-p", str(vhost), "guest", ".*", ".*", ".*")
    except subprocess.TimeoutExpired:
        # A busy broker can take minutes over vhosts (seen under heavy load): the default
        # vhost with names of our own does as well for all but closing connections.
        made = False
    if not made:
        vhost = None
    yield Broker(vhost, f"t{token}.")
    if vhost is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            rabbitmqctl("delete_vhost", vhost)
