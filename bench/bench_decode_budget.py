"""What decoding in a child process under a budget costs, and what it gives back.

Run from the repository root: `python bench/bench_decode_budget.py [--repeat N]`.

1. Time: the worker's image step for an ordinary photo as it was (read the original, then
   `images.process_image` on the worker's thread) and as it is (`decoding.decode_in_child` in a
   warm child, which reads the file itself on a local store, or is handed the bytes on other
   stores; eight encoded variants come back by pickle), interleaved round by round in one run.
   Goal: under 10 % added.
2. Hostile files of the probe (issue 12, rows 4 and 6): how long the API's header read
   (`images.read_image_header`, now parsed without Pillow) and the worker's structure check
   (`sniff.check_structure`) take on them, next to the Pillow header parse they replace.
3. Memory: the worker's resident memory (this process plus its decoding children) when idle,
   right after a 50 MP 16-bit RGBA PNG was processed, and next to it the same in-process in a
   fresh interpreter, which is what the worker did before. Goal: back to idle.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import random
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from glimpse.media import decoding, images
from glimpse.media.sniff import check_structure
from testdata import testdata

REPO = Path(__file__).resolve().parents[1]
PHOTOS = {
    "8 MP (iphone_hdr_YES.jpg)": testdata("camera/iphone_hdr_YES.jpg"),
    "20 MP (Kleiber_by_Lukas_Baubkus.jpg)": testdata("large/Kleiber_by_Lukas_Baubkus.jpg"),
}
FILTER = "clarendon"
BUDGET = decoding.DecodeBudget(cpu_seconds=60, memory_bytes=2 * 2**30, timeout_seconds=120)
BIG_SIZE = (8660, 5774)  # 50 MP
# The worker runs the image step on a thread (asyncio.to_thread); so does this benchmark, since
# glibc keeps a thread's freed memory in that thread's own arena.
_THREAD = ThreadPoolExecutor(max_workers=1)


def on_thread(function: Callable[..., Any], *args: Any) -> Any:
    return _THREAD.submit(function, *args).result()


def write_big_png(path: Path) -> None:
    """A 50 MP RGBA PNG of 16 bits a sample, about 40 MB like a real one (a tenth of each row
    noise, the rest a pattern), written a row at a time so this process never holds it raw."""
    width, height = BIG_SIZE
    rng = random.Random(0)
    pattern = bytes((i * 7) & 0xFF for i in range(4096))
    row_bytes = width * 8
    noisy = row_bytes // 10
    base = (pattern * (row_bytes // len(pattern) + 2))[: row_bytes + len(pattern)]
    compressor = zlib.compressobj(1)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    with path.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr))
        pending = bytearray()
        for y in range(height):
            shift = (y * 8) % len(pattern)
            row = rng.randbytes(noisy) + base[shift : shift + row_bytes - noisy]
            pending += compressor.compress(b"\x00" + row)
            if len(pending) > 1 << 20:
                out.write(chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += compressor.flush()
        out.write(chunk(b"IDAT", bytes(pending)) + chunk(b"IEND", b""))


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def rss_mb(include_children: bool = True) -> tuple[float, float]:
    """(this process, its children) resident memory in MB."""
    me = psutil.Process()
    children = me.children(recursive=True) if include_children else []
    own = me.memory_info().rss
    theirs = 0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            theirs += child.memory_info().rss
    return own / 2**20, theirs / 2**20


def cpu_seconds() -> float:
    """CPU time of this process and its live children (the warm decoding child)."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return total


class PeakSampler:
    """Samples the resident memory of this process and its children every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, sum(rss_mb()))
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def read_and_process(path: Path) -> images.ProcessedImage:
    """The old worker: read the original (storage.get_bytes), decode in this process."""
    return images.process_image(path.read_bytes(), FILTER)


def read_and_decode_in_child(path: Path) -> images.ProcessedImage:
    """A store without local files: the worker reads the bytes and hands them to the child."""
    return decoding.decode_in_child(path.read_bytes(), FILTER, BUDGET)


def decode_file_in_child(path: Path) -> images.ProcessedImage:
    """The local store: the child reads the original itself."""
    return decoding.decode_in_child(path, FILTER, BUDGET)


def time_photos(repeat: int) -> None:
    print("## Worker time of a photo's image step (median of", repeat, "rounds, interleaved)\n")
    print("Wall time, and CPU time of the worker and its decoding child together.\n")
    contenders = {
        "in-process (before)": read_and_process,
        "child reads the file (local store)": decode_file_in_child,
        "child gets the bytes (other stores)": read_and_decode_in_child,
    }
    print("| photo | " + " | ".join(contenders) + " |")
    print("|---|" + "---|" * len(contenders))
    for label, path in PHOTOS.items():
        for run in contenders.values():
            on_thread(run, path)  # warm
        wall: dict[str, list[float]] = {name: [] for name in contenders}
        cpu: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(repeat):
            for name, run in contenders.items():
                started, cpu_started = time.perf_counter(), cpu_seconds()
                on_thread(run, path)
                wall[name].append(time.perf_counter() - started)
                cpu[name].append(cpu_seconds() - cpu_started)
        base_wall = statistics.median(wall["in-process (before)"])
        base_cpu = statistics.median(cpu["in-process (before)"])
        cells = []
        for name in contenders:
            w, c = statistics.median(wall[name]), statistics.median(cpu[name])
            cells.append(
                f"{w * 1000:.0f} ms ({(w / base_wall - 1) * 100:+.1f} %),"
                f" CPU {c * 1000:.0f} ms ({(c / base_cpu - 1) * 100:+.1f} %)"
            )
        print(f"| {label} | " + " | ".join(cells) + " |")
    print()


def hostile_files(folder: Path) -> None:
    from PIL import Image, JpegImagePlugin, PngImagePlugin

    print("## Hostile files: header read and structure check\n")
    files: dict[str, tuple[Path, type[Any]]] = {}
    ihdr = struct.pack(">IIBBBBB", 7000, 7000, 8, 2, 0, 0, 0)
    empty_chunks = folder / "chunks.png"
    with empty_chunks.open("wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr))
        out.write(chunk(b"zzZz", b"") * 3_000_000)
        out.write(chunk(b"IEND", b""))
    files["PNG of 3 million empty chunks"] = (empty_chunks, PngImagePlugin.PngImageFile)
    small = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(small, "JPEG")
    jpeg = small.getvalue()
    app0_end = 4 + int.from_bytes(jpeg[4:6], "big")
    junk = folder / "junk.jpg"
    junk.write_bytes(jpeg[:app0_end] + b"\x00" * 45_000_000 + jpeg[app0_end:])
    files["JPEG with 45 MB of junk before its frame"] = (junk, JpegImagePlugin.JpegImageFile)
    flat = io.BytesIO()
    Image.linear_gradient("L").resize((7000, 7000)).convert("RGB").save(
        flat, "JPEG", progressive=True, quality=60
    )
    data = flat.getvalue()
    last = data.rindex(b"\xff\xda")
    bomb = folder / "scans.jpg"
    bomb.write_bytes(data[:last] + data[last:-2] * 25_000 + b"\xff\xd9")
    files["7000x7000 JPEG of 25,000 scans"] = (bomb, JpegImagePlugin.JpegImageFile)
    print("| file | size | Pillow header parse (before) | read_image_header | check_structure |")
    print("|---|---|---|---|---|")
    for label, (path, plugin) in files.items():
        started = time.perf_counter()
        with path.open("rb") as fp, plugin(fp):
            pass
        pillow = time.perf_counter() - started
        started = time.perf_counter()
        try:
            images.read_image_header(path)
            header = "read"
        except images.UndecodableImage:
            header = "refused"
        ours = time.perf_counter() - started
        content = path.read_bytes()
        started = time.perf_counter()
        problem = check_structure(content)
        structure = time.perf_counter() - started
        del content
        print(
            f"| {label} | {path.stat().st_size / 2**20:.1f} MB | {pillow * 1000:.0f} ms |"
            f" {ours * 1000:.2f} ms ({header}) | {structure * 1000:.1f} ms"
            f" ({'refused' if problem else 'passed'}) |"
        )
        path.unlink()
    print()


def memory(big: Path) -> None:
    print("## Worker resident memory around a 50 MP 16-bit RGBA PNG\n")
    # A warm child, as a worker has after its first photo.
    photo = PHOTOS["8 MP (iphone_hdr_YES.jpg)"].read_bytes()
    on_thread(decoding.decode_in_child, photo, FILTER, BUDGET)
    gc.collect()
    idle_own, idle_children = rss_mb()
    data = big.read_bytes()
    with PeakSampler() as sampler:
        on_thread(decoding.decode_in_child, data, FILTER, BUDGET)
    del data
    gc.collect()
    time.sleep(0.5)
    after_own, after_children = rss_mb()
    inline = json.loads(
        subprocess.run(
            [sys.executable, __file__, "--inline-memory", str(big)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    print(f"PNG: {BIG_SIZE[0]}x{BIG_SIZE[1]}, 16-bit RGBA, {big.stat().st_size / 2**20:.1f} MB\n")
    print("| | idle | peak | after |")
    print("|---|---|---|---|")
    print(
        f"| worker, decoding in a child (worker + children) | {idle_own:.0f} + {idle_children:.0f}"
        f" MB | {sampler.peak:.0f} MB | {after_own:.0f} + {after_children:.0f} MB |"
    )
    print(
        f"| worker, decoding in-process (before) | {inline['idle']:.0f} MB |"
        f" {inline['peak']:.0f} MB | {inline['after']:.0f} MB |"
    )
    print()


def inline_memory(big: Path) -> None:
    """In a fresh interpreter: the worker as it was, decoding in its own process."""
    on_thread(images.process_image, PHOTOS["8 MP (iphone_hdr_YES.jpg)"].read_bytes(), FILTER)
    gc.collect()
    idle = rss_mb(include_children=False)[0]
    data = big.read_bytes()
    with PeakSampler() as sampler:
        on_thread(images.process_image, data, FILTER)
    del data
    gc.collect()
    time.sleep(0.5)
    after = rss_mb(include_children=False)[0]
    print(json.dumps({"idle": idle, "peak": sampler.peak, "after": after}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--inline-memory", type=Path)
    args = parser.parse_args()
    if args.inline_memory:
        inline_memory(args.inline_memory)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores\n")
    time_photos(args.repeat)
    with tempfile.TemporaryDirectory() as folder:
        big = Path(folder) / "big16.png"
        write_big_png(big)
        memory(big)
        big.unlink()
        hostile_files(Path(folder))
    decoding.shutdown()


if __name__ == "__main__":
    main()
