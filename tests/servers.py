"""`glimpse serve` and `glimpse worker` as child processes of a test, which never outlive it.

A test starts them through the `start_server` / `start_worker` fixtures (tests/e2e/conftest.py),
or, in a fixture of a wider scope, inside try/finally with `close()`: whatever assertion fails,
the processes (and the workers `glimpse serve` started) are gone when the test is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process that can be stopped politely (and checked) or made to go away."""

    def __init__(
        self, command: list[str], env: dict[str, str] | None, log: Path | None = None
    ) -> None:
        # Its stderr, where its logs go, into `log` when given.
        stderr = log.open("ab") if log is not None else None
        self.process = subprocess.Popen(
            command,
            stderr=stderr,
            # Throttling off unless a test sets budgets: tests act from one address, fast.
            # Password hashing cheap, as in tests/conftest.py's settings.
            env={
                **os.environ,
                "GLIMPSE_LOG_LEVEL": "WARNING",
                "GLIMPSE_RATE_LIMITS": "off",
                "GLIMPSE_PASSWORD_HASH_TIME_COST": "1",
                "GLIMPSE_PASSWORD_HASH_MEMORY_KIB": "1024",
                **(env or {}),
            },
        )
        if stderr is not None:
            stderr.close()  # (the child has its own copy)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM and its exit code; one that does not end in time is killed and fails the test."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(f"pid {self.pid} ignored SIGTERM for {timeout} s") from None

    def close(self) -> None:
        """Make sure it and every process it started are gone (a test's teardown)."""
        if self.process.poll() is not None:
            return  # reaped: its pid may be another process's by now
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            children = []
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        _, alive = psutil.wait_procs(children, timeout=10)
        for child in alive:
            child.kill()
        psutil.wait_procs(alive, timeout=10)


class Server(Process):
    """`glimpse serve` on a free port, ready to answer once constructed. The address is given
    by --host/--port flags, or with `via_env` by GLIMPSE_HOST/GLIMPSE_PORT."""

    def __init__(
        self,
        data_dir: Path,
        *args: str,
        env: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        via_env: bool = False,
        log: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base = f"http://{host}:{self.port}"
        command = [sys.executable, "-m", "glimpse.cli", "serve", "--data-dir", str(data_dir)]
        if via_env:
            env = {**(env or {}), "GLIMPSE_HOST": host, "GLIMPSE_PORT": str(self.port)}
        else:
            command += ["--host", host, "--port", str(self.port)]
        super().__init__([*command, *args], env, log)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        # (Seen taking 17 s on a machine loaded by other work: a minute and a half is generous.)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.process.poll() is None, "glimpse serve exited during start-up"
            time.sleep(0.1)
        raise AssertionError("glimpse serve did not become ready")

    def worker_processes(self) -> list[psutil.Process]:
        """The worker processes this serve started."""
        return [
            p
            for p in psutil.Process(self.pid).children()
            if "multiprocessing" in " ".join(p.cmdline())
            and "resource_tracker" not in " ".join(p.cmdline())
        ]


class Worker(Process):
    """`glimpse worker` on a data folder."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        command = [sys.executable, "-m", "glimpse.cli", "worker", "--data-dir", str(data_dir)]
        super().__init__(command, env)
