"""Restart RabbitMQ under load on the scale stack, again and again: uploads keep being taken
(the jobs table is the outbox), every acknowledged post is processed and fanned out once, and no
job is lost or left dead.

The broker restarted is a RabbitMQ node of this test's own (the machine's RabbitMQ 3.10, started
as the `rabbitmq` user on free ports, its state in a temporary folder): restarting the machine's
node would cut everyone else's connections. Each restart is `rabbitmqctl stop_app` then
`start_app`: the broker application stops (every connection closed, every queue stopped) and
starts again, recovering its durable quorum queues from disk, inside the same Erlang VM (a
whole new VM would cost 10-40 s a restart on this machine, for nothing more that the
application sees). (tests/integration/test_rabbitmq_worker.py drops every connection with
`close_all_connections`, in-process; this restarts the broker itself, under real processes.)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.broker import reachable
from tests.faults.conftest import (
    Stack,
    Tally,
    count_outcomes,
    post_photo,
    sign_up,
    times,
    wait_for,
)
from tests.servers import Server, Worker, free_port

RESTARTS = times("rabbitmq_restarts", 3)


class PrivateRabbit:
    def __init__(self) -> None:
        self.port = free_port()
        self.node = f"glimpse-faults-{uuid.uuid4().hex[:8]}@localhost"
        self.root = Path(tempfile.mkdtemp(prefix="glimpse-rabbit-"))
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_PID_FILE": str(self.root / "node.pid"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            # Not the machine's rabbitmq.conf, which names the machine's listener.
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
        }

    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F?prefix=faults."

    def _as_rabbitmq(self, argv: list[str]) -> list[str]:
        # The node must run as the `rabbitmq` user (its Erlang cookie is that user's).
        if os.geteuid() == 0:
            return ["runuser", "-u", "rabbitmq", "--", "env", "HOME=/var/lib/rabbitmq", *argv]
        return argv

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "rabbitmq", "rabbitmq")
        subprocess.run(
            self._as_rabbitmq(["rabbitmq-server", "-detached"]),
            env=self.env,
            check=True,
            timeout=60,
            capture_output=True,
        )
        # `-detached` returns before the VM has even registered with epmd, and `await_startup`
        # gives up at once on a node it cannot reach: `wait` waits for the pid file the node
        # writes as it boots, then for the broker to be up.
        self.ctl("wait", self.env["RABBITMQ_PID_FILE"], "--timeout", "180")

    def ctl(self, *args: str) -> None:
        result = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)

    def restart(self) -> None:
        self.ctl("stop_app")
        assert not reachable("127.0.0.1", self.port), "the broker still listens"
        self.ctl("start_app")

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"], env=self.env, capture_output=True, timeout=120
        )
        # A node that never finished booting cannot be asked to stop: it must not outlive us.
        with contextlib.suppress(OSError, ValueError):
            pid = int(Path(self.env["RABBITMQ_PID_FILE"]).read_text().strip())
            os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def private_rabbit() -> Iterator[PrivateRabbit]:
    if shutil.which("rabbitmq-server") is None or shutil.which("rabbitmqctl") is None:
        reason = "RabbitMQ's rabbitmq-server and rabbitmqctl are not installed"
        (pytest.fail if os.environ.get("CI") == "true" else pytest.skip)(reason)
    rabbit = PrivateRabbit()
    try:
        rabbit.start()
        yield rabbit
    finally:
        rabbit.stop()


def test_restart_rabbitmq_under_load(
    scale_stack: Stack,
    private_rabbit: PrivateRabbit,
    processes: list[Server | Worker],
    tally: Tally,
) -> None:
    rng = random.Random(3)
    env = {"GLIMPSE_QUEUE_URL": private_rabbit.url()}
    server = scale_stack.server(env=env)
    processes += [server, scale_stack.worker(0, env), scale_stack.worker(1, env)]
    stop = threading.Event()
    acknowledged: list[str] = []
    refused: list[str] = []

    with httpx.Client(base_url=server.base, timeout=60) as client:
        alice, bob = sign_up(client, "alice"), sign_up(client, "bob")
        assert client.post("/api/v1/users/alice/follow", headers=bob).status_code == 200

        def load() -> None:
            with httpx.Client(base_url=server.base, timeout=60) as c:
                seed = 0
                while not stop.is_set():
                    seed += 1
                    response = post_photo(c, alice, seed)
                    if response.status_code == 202:
                        acknowledged.append(response.json()["id"])
                    else:
                        refused.append(f"{response.status_code} {response.text}")
                    time.sleep(0.2)

        uploader = threading.Thread(target=load)
        uploader.start()
        try:
            for _ in range(RESTARTS):
                wait_for(lambda: len(acknowledged) > 0, lambda: refused, 60)
                time.sleep(rng.uniform(0.5, 2.0))
                private_rabbit.restart()
                tally.injected += 1
            time.sleep(1.0)
        finally:
            stop.set()
            uploader.join(120)
        tally.add("uploads_refused", len(refused))
        count_outcomes(tally, client, alice, bob, acknowledged)
        tally.add("dead_jobs", scale_stack.scalar("SELECT count(*) FROM jobs WHERE state = 'dead'"))
        for process in processes:
            tally.add("processes_died", process.process.poll() is not None)
    counts = tally.counts
    for what in (
        "uploads_refused", "lost", "failed", "duplicated_variants", "incomplete_variants",
        "missing_from_feed", "duplicated_feed_entries", "dead_jobs", "processes_died",
    ):  # fmt: skip
        assert counts[what] == 0, counts
