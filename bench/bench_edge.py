"""The media edge (issue 19): requests/s for one w1080 JPEG, all in the same run, servers pinned
to core 0 and wrk (1 thread) to core 1:

- nginx serving the file from disk (the reference);
- the shipped edge (`glimpse edge-config`) on a cache hit, 200 and 304;
- Glimpse's origin (`glimpse serve`, the media fast path), 200 and 304;
- with --baseline-src, the same origin from another checkout's source (say /work/main/src: the
  full FastAPI stack before the fast path), 200 and 304;
- a bare Starlette handler returning the bytes from memory on the same uvicorn, and a raw ASGI
  app (no framework) doing the same: the floor under any Python origin on this server.

Besides requests/s, each row gives the CPU time its server spent per request (its processes'
/proc schedstat over the run, divided by wrk's count) and the reference's CPU per request over
this one's. On a shared machine the first swings with the neighbours' load, and wrk itself is
often the bottleneck (a 124 KB answer costs it more CPU than it costs nginx); the CPU ratio is
what a server alone on its core would show as a ratio of rates.

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
from bench_origin import (
    RAW_ETAG,
    REFERENCE_APP,
    Load,
    on_core,
    process_tree,
    wait_until_up,
    wrk_with_cpu,
)
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
{tuning}    keepalive_timeout 65s;
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


# What the edge does for its cache files (glimpse/edge/nginx.py), given to a second static
# reference: the like-for-like comparison.
OPEN_FILE_CACHE = "    open_file_cache max=4096 inactive=60s;\n"


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

    def start_static(tmp: Path, port: int, root: Path, tuning: str) -> int:
        name = f"static{port}"
        (tmp / name).mkdir()
        config = STATIC_NGINX.format(tmp=tmp / name, user=user, port=port, root=root, tuning=tuning)
        (tmp / f"{name}.conf").write_text(config)
        return start([nginx, "-c", str(tmp / f"{name}.conf"), "-g", "daemon off;"]).pid

    def start_uvicorn(tmp: Path, port: int, app: str, path: Path) -> int:
        return start(
            [
                sys.executable, "-m", "uvicorn", app, "--port", str(port),
                "--log-level", "warning", "--no-access-log",
            ],
            cwd=tmp, env={**env, "PYTHONPATH": str(tmp), "REFERENCE_FILE": str(path)},
        ).pid  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        try:
            data_dir = tmp / "data"
            port = free_port()
            origin = f"http://127.0.0.1:{port}"
            # (Its CPU is its own process's: not its job workers', which sit idle here.)
            origin_pids = [
                start(
                    serve_command(port, 1, data_dir),
                    env={**env, "GLIMPSE_TRUSTED_PROXY_HOPS": "1"},
                ).pid
            ]
            wait_until_up(f"{origin}/readyz")
            url, etag = publish(origin)
            path = data_dir / url.removeprefix("/")
            size_kb = path.stat().st_size / 1024

            static_port, tuned_port = free_port(), free_port()
            static, tuned = f"http://127.0.0.1:{static_port}", f"http://127.0.0.1:{tuned_port}"
            static_pid = start_static(tmp, static_port, data_dir, "")
            # The same with the one setting the edge has that a default static server lacks.
            tuned_pid = start_static(tmp, tuned_port, data_dir, OPEN_FILE_CACHE)
            wait_until_up(static + url)
            wait_until_up(tuned + url)
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
            edge_pid = start([nginx, "-c", str(tmp / "edge.conf"), "-g", "daemon off;"]).pid
            wait_until_up(edge + url)
            if httpx.get(edge + url).headers.get("x-edge-cache") != "HIT":
                raise SystemExit("the edge does not answer from its cache")

            (tmp / "reference_app.py").write_text(REFERENCE_APP)
            ref_port, raw_port = free_port(), free_port()
            ref, raw = f"http://127.0.0.1:{ref_port}", f"http://127.0.0.1:{raw_port}"
            ref_pid = start_uvicorn(tmp, ref_port, "reference_app:app", path)
            raw_pid = start_uvicorn(tmp, raw_port, "reference_app:raw_app", path)
            wait_until_up(f"{ref}/memory")
            wait_until_up(f"{raw}/")

            baseline = None
            if args.baseline_src is not None:
                baseline_port = free_port()
                baseline = f"http://127.0.0.1:{baseline_port}"
                # Its own data folder, the same photo (the same key, and the same bytes).
                baseline_pid = start(
                    serve_command(baseline_port, 1, tmp / "baseline"),
                    env={**env, "PYTHONPATH": str(args.baseline_src.resolve())},
                ).pid
                wait_until_up(f"{baseline}/readyz")
                baseline_url, baseline_etag = publish(baseline)

            # nginx: its master, worker and cache processes.
            nginx_pids = {pid: process_tree(pid) for pid in (static_pid, tuned_pid, edge_pid)}
            held = {"If-None-Match": etag}
            runs: list[tuple[str, str, dict[str, str], int, list[int]]] = [
                ("nginx static file", static + url, {}, 200, nginx_pids[static_pid]),
                (
                    "nginx static file, 304",
                    static + url,
                    {"If-None-Match": static_etag},
                    304,
                    nginx_pids[static_pid],
                ),
                ("nginx static, open_file_cache", tuned + url, {}, 200, nginx_pids[tuned_pid]),
                (
                    "nginx static, open_file_cache, 304",
                    tuned + url,
                    {"If-None-Match": static_etag},
                    304,
                    nginx_pids[tuned_pid],
                ),
                ("edge, cache hit", edge + url, {}, 200, nginx_pids[edge_pid]),
                ("edge, cache hit, 304", edge + url, held, 304, nginx_pids[edge_pid]),
                ("glimpse origin", origin + url, {}, 200, origin_pids),
                ("glimpse origin, 304", origin + url, held, 304, origin_pids),
                ("bare Starlette handler, bytes from memory", f"{ref}/memory", {}, 200, [ref_pid]),
                ("raw ASGI app, bytes from memory", f"{raw}/", {}, 200, [raw_pid]),
                ("raw ASGI app, 304", f"{raw}/", {"If-None-Match": RAW_ETAG}, 304, [raw_pid]),
            ]
            if baseline is not None:
                runs += [
                    (
                        "origin before the fast path",
                        baseline + baseline_url,
                        {},
                        200,
                        [baseline_pid],
                    ),
                    (
                        "origin before the fast path, 304",
                        baseline + baseline_url,
                        {"If-None-Match": baseline_etag},
                        304,
                        [baseline_pid],
                    ),
                ]
            results: dict[str, list[Load]] = {name: [] for name, *_ in runs}
            for _name, target, headers, status, _pids in runs:
                expect(target, status, headers)
            for _ in range(args.rounds):
                for name, target, headers, _status, pids in runs:
                    load = wrk_with_cpu(target, seconds=args.seconds,
                                        connections=args.connections, headers=headers,
                                        server_pids=pids)  # fmt: skip
                    results[name].append(load)
        finally:
            for process in reversed(processes):
                stop(process)

    print(
        f"\n### Media edge, a {size_kb:.0f} KB w1080 JPEG, servers on core 0, wrk -t1 "
        f"-c{args.connections} on core 1, {args.seconds} s each, {args.rounds} rounds\n"
    )
    print(
        "| server | requests/s (median) | runs | of nginx static, same status (median of "
        "rounds) | server CPU per request | nginx static's CPU / this one's (median of rounds) |"
    )
    print("|---|---:|---|---:|---:|---:|")
    for name, loads in results.items():
        reference = results[
            "nginx static file, 304" if name.endswith("304") else "nginx static file"
        ]
        rates = [load.rate for load in loads]
        ratios = [load.rate / ref.rate for load, ref in zip(loads, reference, strict=True)]
        cpu = [ref.server_us / load.server_us for load, ref in zip(loads, reference, strict=True)]
        runs_text = ", ".join(f"{rate:,.0f}" for rate in rates)
        print(
            f"| {name} | {statistics.median(rates):,.0f} | {runs_text} "
            f"| {statistics.median(ratios):.0%} "
            f"| {statistics.median(load.server_us for load in loads):.1f} us "
            f"| {statistics.median(cpu):.0%} |"
        )
    print(
        "\nwrk's own CPU per request (median): "
        + ", ".join(
            f"{name} {statistics.median(load.client_us for load in loads):.0f} us"
            for name, loads in results.items()
            if name in ("nginx static file", "edge, cache hit", "glimpse origin")
        )
    )


if __name__ == "__main__":
    main()
