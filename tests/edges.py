"""The nginx edge (`glimpse edge-config`) as a child process of a test, in front of a Server."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import Process, free_port


def nginx_binary() -> str:
    """The nginx to run; with CI=true a missing one fails the test (.ci/run installs it)."""
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
    )
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (.ci/run installs Debian's)")
        pytest.skip("nginx is not installed")
    return found


def edge_config(
    cache_dir: Path, listen: str, upstream: str, env: dict[str, str], *extra: str
) -> str:
    """What `glimpse edge-config` prints, run as the command it is."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "glimpse.cli",
            "edge-config",
            "--listen",
            listen,
            "--upstream",
            upstream,
            "--cache-dir",
            str(cache_dir),
            "--worker-processes",
            "1",
            *extra,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


class Edge(Process):
    """nginx with the generated configuration, on a free loopback port, up once constructed."""

    def __init__(
        self,
        cache_dir: Path,
        upstream: str,
        env: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.cache_dir = cache_dir
        config = cache_dir / "nginx.conf"
        # (As root, its workers would otherwise be `nobody`, shut out of pytest's 0700 folders.)
        extra = ["--user", "root"] if os.geteuid() == 0 else []
        if tls is not None:
            extra += ["--tls-cert", str(tls[0]), "--tls-key", str(tls[1])]
        text = edge_config(cache_dir, f"127.0.0.1:{self.port}", upstream, env or {}, *extra)
        config.write_text(text)
        super().__init__([nginx_binary(), "-c", str(config), "-g", "daemon off;"], None)
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (cache_dir / "error.log").read_text(errors="replace")
                    self.close()
                    raise AssertionError(f"nginx did not start: {log}") from None
                time.sleep(0.05)
