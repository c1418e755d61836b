"""The media edge (issue 19): requests/s for one w1080 JPEG, all in the same run, servers pinned
to core 0 and wrk (1 thread) to core 1:

- nginx serving the file from disk (the reference);
- the shipped edge (`glimpse edge-config`) on a cache hit, 200 and 304;
- Glimpse's origin (`glimpse serve`, the media fast path), 200 and 304;
- with --baseline-src, the same origin from another checkout's source (say /work/main/src: the
  full FastAPI stack before the fast path), 200 and 304;
- a bare Starlette handler returning the bytes from memory on the same uvicorn.

    python bench/bench_edge.py [--seconds 10] [--connections 32] [--baseline-src DIR]

Needs `wrk` and `nginx` (Debian: apt-get install wrk nginx).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_origin import REFERENCE_APP, on_core, wait_until_up, wrk
from bench_upload_latency import free_port, serve_command
from testdata import testdata

STATIC_NGINX = """\
worker_processes 1;
pid "{tmp}/static.pid";
error_log "{tmp}/static-error.log" warn;
{user}
events {{ worker_connections 4096; }}
http {{
    types {{ image/jpeg jpg; }}
    server_tokens off;
    sendfile on;
    tcp_nopush off;  # (as the edge: like for like)
    keepalive_timeout 65s;
    keepalive_requests 10000;
    client_body_temp_path "{tmp}/s_body";
    proxy_temp_path "{tmp}/s_proxy";
    fastcgi_temp_path "{tmp}/s_fastcgi";
    uwsgi_temp_path "{tmp}/s_uwsgi";
    scgi_temp_path "{tmp}/s_scgi";
    log_format plain '$remote_addr [$time_iso8601] "$request_method $uri" $status '
                     '$body_bytes_sent $request_time';
    access_log "{tmp}/static-access.log" plain buffer=64k flush=1s;
    server {{
        listen 127.0.0.1:{port};
        location /media/ {{ root "{root}"; }}
    }}
}}
"""


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is not None and process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def publish(base: str) -> tuple[str, str]:
    """A processed photo's w1080 JPEG: its URL path and its ETag."""
    with httpx.Client(base_url=base, timeout=60) as client:
        body = {"username": "bench", "password": "benchmark!"}
        client.post("/api/v1/accounts", json=body).raise_for_status()
        token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        photo = testdata("camera/DSCN0010.jpg").read_bytes()
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
    url = str(variant["url"])
    etag = httpx.get(base + url).headers["etag"]
    return url, etag


def expect(url: str, status: int, headers: dict[str, str] | None = None) -> None:
    got = httpx.get(url, headers=headers)
    if got.status_code != status:
        raise SystemExit(f"{url}: {got.status_code}, expected {status}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--baseline-src", type=Path, default=None)
    # The machine is shared: every server is measured once per round, in turn, and the table
    # gives the median of each, and of its per-round ratio to nginx.
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    env = {**os.environ, "GLIMPSE_LOG_LEVEL": "WARNING", "GLIMPSE_RATE_LIMITS": "off"}
    user = "user root;" if os.geteuid() == 0 else ""
    processes: list[subprocess.Popen[bytes]] = []

    def start(command: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        process = on_core(0, command, **{**quiet, **kwargs})
        processes.append(process)
        return process

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            data_dir = tmp / "data"
            port = free_port()
            origin = f"http://127.0.0.1:{port}"
            start(
                serve_command(port, 1, data_dir),
                env={**env, "GLIMPSE_TRUSTED_PROXY_HOPS": "1"},
            )
            wait_until_up(f"{origin}/readyz")
            url, etag = publish(origin)
            path = data_dir / url.removeprefix("/")
            size_kb = path.stat().st_size / 1024

            static_port = free_port()
            static = f"http://127.0.0.1:{static_port}"
            config = STATIC_NGINX.format(tmp=tmp, user=user, port=static_port, root=data_dir)
            (tmp / "static.conf").write_text(config)
            start([nginx, "-c", str(tmp / "static.conf"), "-g", "daemon off;"])
            wait_until_up(static + url)
            static_etag = httpx.get(static + url).headers["etag"]

            edge_port = free_port()
            edge = f"http://127.0.0.1:{edge_port}"
            cache = tmp / "edge"
            edge_conf = subprocess.run(
                [
                    sys.executable, "-m", "glimpse.cli", "edge-config",
                    "--listen", f"127.0.0.1:{edge_port}", "--upstream", origin,
                    "--cache-dir", str(cache), "--worker-processes", "1",
                    *(("--user", "root") if os.geteuid() == 0 else ()),
                ],
                capture_output=True, text=True, check=True, env=env,
            ).stdout  # fmt: skip
            (tmp / "edge.conf").write_text(edge_conf)
            start([nginx, "-c", str(tmp / "edge.conf"), "-g", "daemon off;"])
            wait_until_up(edge + url)
            if httpx.get(edge + url).headers.get("x-edge-cache") != "HIT":
                raise SystemExit("the edge does not answer from its cache")

            (tmp / "reference_app.py").write_text(REFERENCE_APP)
            ref_port = free_port()
            ref = f"http://127.0.0.1:{ref_port}"
            start(
                [
                    sys.executable, "-m", "uvicorn", "reference_app:app", "--port",
                    str(ref_port), "--log-level", "warning", "--no-access-log",
                ],
                cwd=tmp, env={**env, "PYTHONPATH": str(tmp), "REFERENCE_FILE": str(path)},
            )  # fmt: skip
            wait_until_up(f"{ref}/memory")

            baseline = None
            if args.baseline_src is not None:
                baseline_port = free_port()
                baseline = f"http://127.0.0.1:{baseline_port}"
                # Its own data folder, the same photo (the same key, and the same bytes).
                start(
                    serve_command(baseline_port, 1, tmp / "baseline"),
                    env={**env, "PYTHONPATH": str(args.baseline_src.resolve())},
                )
                wait_until_up(f"{baseline}/readyz")
                baseline_url, baseline_etag = publish(baseline)

            seconds, connections = args.seconds, args.connections
            runs: list[tuple[str, str, dict[str, str], int]] = [
                ("nginx static file", static + url, {}, 200),
                ("nginx static file, 304", static + url, {"If-None-Match": static_etag}, 304),
                ("edge, cache hit", edge + url, {}, 200),
                ("edge, cache hit, 304", edge + url, {"If-None-Match": etag}, 304),
                ("glimpse origin", origin + url, {}, 200),
                ("glimpse origin, 304", origin + url, {"If-None-Match": etag}, 304),
                ("bare Starlette handler, bytes from memory", f"{ref}/memory", {}, 200),
            ]
            if baseline is not None:
                runs += [
                    ("origin before the fast path", baseline + baseline_url, {}, 200),
                    (
                        "origin before the fast path, 304",
                        baseline + baseline_url,
                        {"If-None-Match": baseline_etag},
                        304,
                    ),
                ]
            results: dict[str, list[float]] = {name: [] for name, *_ in runs}
            for _name, target, headers, status in runs:
                expect(target, status, headers)
            for _ in range(args.rounds):
                for name, target, headers, _status in runs:
                    results[name].append(wrk(target, seconds, connections, headers))
        finally:
            for process in reversed(processes):
                stop(process)

    print(
        f"\n### Media edge, a {size_kb:.0f} KB w1080 JPEG, servers on core 0, wrk -t1 "
        f"-c{connections} on core 1, {seconds} s each, {args.rounds} rounds\n"
    )
    print(
        "| server | requests/s (median) | runs | of nginx static, same status (median of rounds) |"
    )
    print("|---|---:|---|---:|")
    for name, rates in results.items():
        reference = results[
            "nginx static file, 304" if name.endswith("304") else "nginx static file"
        ]
        ratios = [rate / ref for rate, ref in zip(rates, reference, strict=True)]
        runs_text = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(
            f"| {name} | {statistics.median(rates):,.0f} | {runs_text} "
            f"| {statistics.median(ratios):.0%} |"
        )


if __name__ == "__main__":
    main()
