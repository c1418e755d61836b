"""Media origin throughput: GET /media/{key} of a processed w1080 JPEG through `glimpse serve`,
side by side in the same run with two references on the same file and the same uvicorn:
Starlette's FileResponse (what a naive origin does) and the same bytes from memory (the ceiling
of any Python handler). Needs `wrk` (Debian: apt-get install wrk).

    python bench/bench_origin.py [--seconds 10] [--connections 32]

Servers run on core 0 and wrk on core 1, so that the load generator does not steal the server's CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_upload_latency import free_port, serve_command
from testdata import testdata

REFERENCE_APP = textwrap.dedent(
    """
    import os
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    path = os.environ["REFERENCE_FILE"]
    data = open(path, "rb").read()

    async def from_file(request):
        return FileResponse(path, media_type="image/jpeg")

    async def from_memory(request):
        return Response(data, media_type="image/jpeg")

    app = Starlette(routes=[Route("/file", from_file), Route("/memory", from_memory)])

    # The floor under any ASGI app on this uvicorn: no framework at all, the same bytes and an
    # ETag (200), or a 304 when the client holds them.
    _etag = b'"reference"'
    _ok = [(b"content-type", b"image/jpeg"), (b"etag", _etag), (b"content-length", str(len(data)).encode())]
    _not_modified = [(b"etag", _etag)]

    async def raw_app(scope, receive, send):
        if scope["type"] != "http":
            return
        held = any(name == b"if-none-match" and value == _etag for name, value in scope["headers"])
        if held:
            await send({"type": "http.response.start", "status": 304, "headers": _not_modified})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.start", "status": 200, "headers": _ok})
            await send({"type": "http.response.body", "body": data})
    """
)
RAW_ETAG = '"reference"'


def wait_until_up(url: str) -> None:
    for _ in range(300):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def on_core(core: int, command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", str(core), *command], **kwargs)  # type: ignore[call-overload]


def wrk(url: str, seconds: int, connections: int, headers: dict[str, str] | None = None) -> float:
    return wrk_with_cpu(url, seconds, connections, headers).rate


def process_tree(pid: int) -> list[int]:
    """A process and its descendants (nginx's master and its workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(child) for child in children)
    return found


def cpu_ns(pids: Sequence[int]) -> int:
    """CPU time the processes' threads have run, in nanoseconds (/proc/PID/schedstat: exact,
    unlike the tick-counted utime/stime)."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            # (A thread that ended between the listing and the read counts no more.)
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int((task / "schedstat").read_text().split()[0])
    return total


class Load(NamedTuple):
    rate: float  # requests/s
    server_us: float  # the server's CPU time per request, microseconds (0: not measured)
    client_us: float  # wrk's


def wrk_with_cpu(
    url: str,
    seconds: int,
    connections: int,
    headers: dict[str, str] | None = None,
    server_pids: Sequence[int] = (),
) -> Load:
    """Requests/s, and the CPU time the server (the processes `server_pids`) and wrk spent per
    request. On a shared machine the rate swings with the neighbours' load; the
    CPU times much less, as a request costs what it costs whenever it runs."""
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    before = cpu_ns(server_pids)
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spent = cpu_ns(server_pids) - before
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (client_after.ru_utime + client_after.ru_stime) - (
        client_before.ru_utime + client_before.ru_stime
    )
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses")
    assert match and count, out
    requests = max(1, int(count.group(1)))
    return Load(float(match.group(1)), spent / 1000 / requests, client * 1e6 / requests)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "GLIMPSE_LOG_LEVEL": "WARNING"}

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        glimpse = on_core(
            0,
            serve_command(port, 1, data_dir),
            env=env,
            **quiet,
        )
        reference = None
        try:
            wait_until_up(f"{base}/readyz")
            with httpx.Client(base_url=base, timeout=60) as client:
                body = {"username": "bench", "password": "benchmark!"}
                client.post("/api/v1/accounts", json=body).raise_for_status()
                token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
                headers = {"Authorization": f"Bearer {token}"}
                photo = testdata("camera/iphone_hdr_YES.jpg").read_bytes()
                post_id = client.post(
                    "/api/v1/posts", headers=headers, files=[("file", ("p.jpg", photo))]
                ).json()["id"]
                while (post := client.get(f"/api/v1/posts/{post_id}", headers=headers).json())[
                    "status"
                ] == "processing":
                    time.sleep(0.05)
            variant = next(
                v
                for v in post["media"][0]["variants"]
                if v["name"] == "w1080" and v["content_type"] == "image/jpeg"
            )
            key = variant["url"].removeprefix("/media/")
            path = data_dir / "media" / key
            size_kb = path.stat().st_size / 1024

            (Path(tmp) / "reference_app.py").write_text(REFERENCE_APP)
            ref_port = free_port()
            ref_base = f"http://127.0.0.1:{ref_port}"
            reference = on_core(
                0,
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "reference_app:app",
                    "--port",
                    str(ref_port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                cwd=tmp,
                env={**env, "PYTHONPATH": tmp, "REFERENCE_FILE": str(path)},
                **quiet,
            )
            wait_until_up(f"{ref_base}/memory")

            results = {
                "glimpse /media/{key}": wrk(base + variant["url"], args.seconds, args.connections),
                "reference: Starlette FileResponse": wrk(
                    f"{ref_base}/file", args.seconds, args.connections
                ),
                "reference: same bytes from memory": wrk(
                    f"{ref_base}/memory", args.seconds, args.connections
                ),
            }
        finally:
            for process in (glimpse, reference):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=60)

    ours = results["glimpse /media/{key}"]
    print(
        f"\n### Media origin, a {size_kb:.0f} KB w1080 JPEG, one server core, wrk -c{args.connections}"
        f" for {args.seconds} s each\n"
    )
    print("| server | requests/s | glimpse / this |")
    print("|---|---:|---:|")
    for name, rate in results.items():
        print(f"| {name} | {rate:,.0f} | {ours / rate:.2f} |")


if __name__ == "__main__":
    main()
