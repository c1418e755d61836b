"""Upload-to-ready latency through a running `glimpse serve`, at steady upload rates.

For each rate, uploads of a 12 MP photo are sent at fixed intervals for a while; each upload's
latency is the time from sending it to seeing its post `ready` (polled every 20 ms). The
reference, measured in the same run: the worker's own processing time for that photo in-process
(so latency / processing shows what HTTP, the queue and storage add), and the throughput that
the machine's cores could reach if they did nothing but that processing.

    python bench/bench_upload_latency.py [--rates 0.5,1,2,3,4] [--seconds 20]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image

from testdata import testdata


def twelve_megapixel_jpeg() -> bytes:
    image = Image.open(testdata("large/Kleiber_by_Lukas_Baubkus.jpg")).convert("RGB")
    image = image.resize((4000, 3000), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def processing_reference(photo: bytes, repeats: int = 5) -> float:
    from glimpse.media.images import process_image

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        process_image(photo, "clarendon")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(port: int, workers: int, data_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "glimpse.cli", "serve", "--port", str(port),
        "--workers", str(workers), "--data-dir", str(data_dir),
    ]  # fmt: skip


def start_server(data_dir: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        serve_command(port, workers, data_dir),
        # It polls each post every 20 ms and uploads hundreds: far past the default budgets.
        env={**os.environ, "GLIMPSE_LOG_LEVEL": "WARNING", "GLIMPSE_RATE_LIMITS": "off"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit("server did not start")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_rate(
    base: str, headers: dict[str, str], photo: bytes, rate: float, seconds: float
) -> dict[str, float]:
    count = max(3, int(rate * seconds))
    latencies: list[float] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        with httpx.Client(base_url=base, timeout=120) as client:
            started = time.perf_counter()
            response = client.post(
                "/api/v1/posts", headers=headers, files=[("file", ("p.jpg", photo))]
            )
            response.raise_for_status()
            post_id = response.json()["id"]
            while True:
                status = client.get(f"/api/v1/posts/{post_id}", headers=headers).json()["status"]
                if status != "processing":
                    break
                time.sleep(0.02)
            with lock:
                latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=64) as pool:
        futures = []
        for i in range(count):
            # Fixed schedule (open loop): a slow server does not slow the arrivals down.
            delay = began + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(one, i))
        for f in futures:
            f.result()
    elapsed = time.perf_counter() - began
    third = max(1, len(latencies) // 3)
    return {
        "rate": rate,
        "uploads": len(latencies),
        "p50": statistics.median(latencies),
        "p95": percentile(latencies, 0.95),
        "achieved": len(latencies) / elapsed,
        # Growing latency from the first third of the run to the last: the queue is filling.
        "growth": statistics.median(latencies[-third:]) / statistics.median(latencies[:third]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="0.5,1,2,3,4")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    photo = twelve_megapixel_jpeg()
    reference = processing_reference(photo)
    cores = os.cpu_count() or 1
    print(
        f"12 MP photo: {len(photo) / 1e6:.1f} MB; in-process processing {reference * 1000:.0f} ms"
    )
    print(f"reference ceiling: {cores} cores / processing time = {cores / reference:.1f} uploads/s")
    with tempfile.TemporaryDirectory() as tmp:
        process, base = start_server(Path(tmp) / "data", args.workers)
        try:
            with httpx.Client(base_url=base) as client:
                body = {"username": "bench", "password": "benchmark!"}
                client.post("/api/v1/accounts", json=body).raise_for_status()
                token = client.post("/api/v1/auth/token", json=body).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            print(
                "| offered uploads/s | achieved/s | p50 ms | p95 ms | p50 / processing | latency growth |"
            )
            print("|---|---|---|---|---|---|")
            for rate in (float(r) for r in args.rates.split(",")):
                r = run_rate(base, headers, photo, rate, args.seconds)
                print(
                    f"| {rate:g} | {r['achieved']:.2f} | {r['p50'] * 1000:.0f} | {r['p95'] * 1000:.0f}"
                    f" | {r['p50'] / reference:.2f}x | {r['growth']:.2f}x |",
                    flush=True,
                )
                if r["growth"] > 3:
                    print("latency grows without bound at this rate: stopping")
                    break
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)


if __name__ == "__main__":
    main()
