"""Media origin throughput: GET /media/{key} of a processed w1080 JPEG through `glimpse serve`,
side by side in the same run with two references on the same file and the same uvicorn:
Starlette's FileResponse (what a naive origin does) and the same bytes from memory (the ceiling
of any Python handler). Needs `wrk` (Debian: apt-get install wrk).

    python bench/bench_origin.py [--seconds 10] [--connections 32]

Servers run on core 0 and wrk on core 1, so that the load generator does not steal the server's CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

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
    """
)


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
    extra = [arg for name, value in (headers or {}).items() for arg in ("-H", f"{name}: {value}")]
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses")
    assert match, out
    return float(match.group(1))


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
