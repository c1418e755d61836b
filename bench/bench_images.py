"""Benchmark the image pipeline against a naive Pillow pipeline, libvips and the encode floor.

Run from the repository root: `python bench/bench_images.py [--repeat N]`.

Everything runs on one core (the worker's unit of scaling), interleaved round by round
so that frequency scaling and cache warmth hit every contender alike. All contenders
produce the same eight outputs (w1080, w640, w320, sq150 as JPEG and WebP) with the same
encoder settings and apply the same colour grade:

- ours:  glimpse.media.images.process_image(data, FILTER)
- naive: full decode, exif_transpose, every output resized from the full image
- vips:  pyvips at its best: one shrink-on-load decode (thumbnail_buffer), chained resizes
- floor: only the eight encodes, on images sized beforehand (outside the timing)

Then the peak RSS of ours and of the naive pipeline on a generated 50 MP JPEG, each in a
fresh child process, next to a child that only imports the module and reads the file.
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# libvips would otherwise start a thread per core and cache whole operations between
# repetitions; both would flatter it on a one-core benchmark.
os.environ.setdefault("VIPS_CONCURRENCY", "1")

from PIL import Image, ImageOps

from glimpse.media.filters import FILTERS, apply_filter, channel_curves, color_matrix
from glimpse.media.images import JPEG_QUALITY, WEBP_METHOD, WEBP_QUALITY, process_image
from glimpse.media.planning import (
    centre_square_box,
    clamp_aspect_box,
    jpeg_draft_request,
    jpeg_draft_scale,
    plan_variants,
)
from testdata import testdata

PHOTOS = {
    "8 MP (iphone_hdr_YES.jpg)": testdata("camera/iphone_hdr_YES.jpg"),
    "20 MP (Kleiber_by_Lukas_Baubkus.jpg)": testdata("large/Kleiber_by_Lukas_Baubkus.jpg"),
}
FILTER = "clarendon"
BIG_SIZE = (8660, 5773)


def encode_pillow(image: Image.Image) -> list[bytes]:
    out = []
    for fmt, params in (
        ("JPEG", {"quality": JPEG_QUALITY, "optimize": True}),
        ("WEBP", {"quality": WEBP_QUALITY, "method": WEBP_METHOD}),
    ):
        buf = io.BytesIO()
        image.save(buf, fmt, **params)
        out.append(buf.getvalue())
    return out


def ours(data: bytes) -> int:
    return len(process_image(data, FILTER).variants)


def naive(data: bytes) -> int:
    """What a first version would do: decode everything, resize everything from it."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    image = image.crop(clamp_aspect_box(*image.size))
    outputs = []
    for plan in plan_variants(*image.size):
        if plan.width == plan.height:
            sized = image.crop(centre_square_box(*image.size)).resize(
                (plan.width, plan.height), Image.Resampling.LANCZOS
            )
        else:
            sized = image.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
        outputs += encode_pillow(apply_filter(sized, FILTER))
    return len(outputs)


@functools.cache
def _vips() -> tuple[Any, Any, list[list[float]], list[float]]:
    """pyvips and the filter as a libvips LUT + matrix, loaded on first use only.

    Imported lazily so that the memory-measuring children of the naive pipeline do
    not carry libvips.
    """
    import pyvips

    pyvips.cache_set_max(0)
    spec = FILTERS[FILTER]
    curves = channel_curves(spec)
    table = bytes(round(255 * curves[c](i / 255)) for i in range(256) for c in range(3))
    lut = pyvips.Image.new_from_memory(table, 256, 1, 3, "uchar")
    matrix = color_matrix(spec)
    return pyvips, lut, [list(row[:3]) for row in matrix], [row[3] * 255 for row in matrix]


def vips(data: bytes) -> int:
    """libvips used well: shrink-on-load to the largest output, then chained resizes."""
    pyvips, lut, matrix, offset = _vips()
    header = pyvips.Image.new_from_buffer(data, "")
    width, height = header.width, header.height
    if header.get_typeof("orientation") and header.get("orientation") in (5, 6, 7, 8):
        width, height = height, width
    left, top, right, bottom = clamp_aspect_box(width, height)
    plans = plan_variants(right - left, bottom - top)
    largest = pyvips.Image.thumbnail_buffer(
        data, plans[0].width, height=plans[0].height, crop="centre", size="down"
    )
    graded = largest.maplut(lut).recomb(matrix).linear([1, 1, 1], offset)
    previous = graded.cast("uchar").copy_memory()
    outputs = []
    for plan in plans:
        if plan.name == "sq150":
            side = min(previous.width, previous.height)
            square = previous.crop(
                (previous.width - side) // 2, (previous.height - side) // 2, side, side
            )
            sized = square.resize(plan.width / side).copy_memory()
        elif previous.width != plan.width:
            sized = previous.resize(plan.width / previous.width).copy_memory()
        else:
            sized = previous
        outputs.append(sized.jpegsave_buffer(Q=JPEG_QUALITY, optimize_coding=True, keep="icc"))
        outputs.append(sized.webpsave_buffer(Q=WEBP_QUALITY, effort=WEBP_METHOD, keep="icc"))
        previous = sized
    return len(outputs)


def floor_for(data: bytes) -> Callable[[bytes], int]:
    """The eight encodes alone, on the four images prepared here, outside the timing."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    image = image.crop(clamp_aspect_box(*image.size))
    sized = []
    for plan in plan_variants(*image.size):
        source = image.crop(centre_square_box(*image.size)) if plan.name == "sq150" else image
        resized = source.resize((plan.width, plan.height), Image.Resampling.LANCZOS)
        # Filtered like ours: a graded image has more detail to encode than the original.
        sized.append(apply_filter(resized, FILTER))
    del image

    def encodes(_: bytes) -> int:
        return sum(len(encode_pillow(im)) for im in sized)

    return encodes


def decode_only(data: bytes) -> int:
    """Not a contender: the JPEG decode alone at the DCT scale ours picks (its lower bound)."""
    with Image.open(io.BytesIO(data)) as im:
        crop = clamp_aspect_box(*im.size)
        largest = plan_variants(crop[2] - crop[0], crop[3] - crop[1])[0]
        scale = jpeg_draft_scale(
            crop[2] - crop[0], crop[3] - crop[1], largest.width, largest.height
        )
        im.draft("RGB", jpeg_draft_request(*im.size, scale))
        im.load()
    return 8  # the contenders' output count, so the warm-up check passes


def time_contenders(
    data: bytes, contenders: dict[str, Callable[[bytes], int]], repeat: int
) -> dict[str, float]:
    for run in contenders.values():  # warm-up: imports, filter tables, allocator
        assert run(data) == 8
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, run in contenders.items():
            start = time.perf_counter()
            run(data)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) * 1000 for name, times in samples.items()}


CHILD = """
import sys
path, mode, bench_dir = sys.argv[1:4]
from glimpse.media.images import process_image
data = open(path, "rb").read()
if mode == "ours":
    process_image(data, "clarendon")
elif mode == "naive":
    sys.path.insert(0, bench_dir)
    import bench_images
    bench_images.naive(data)
"""

# A child's peak RSS starts from its parent's at fork (Linux carries the high-water
# mark across exec), and this benchmark's own process is large. A bare interpreter
# launches each measured child instead, so every figure starts from ~10 MB.
TRAMPOLINE = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def child_peak_rss_mb(path: Path, mode: str) -> float:
    """Peak RSS of a fresh process running `mode` on the file at `path`."""
    measured = [sys.executable, "-c", CHILD, str(path), mode, str(Path(__file__).parent)]
    result = subprocess.run(
        [sys.executable, "-S", "-c", TRAMPOLINE, *measured],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(result.stdout.split()[-1]) / 1024  # kilobytes on Linux


def make_big_jpeg(directory: Path) -> Path:
    path = directory / "big_50mp.jpg"
    with Image.open(PHOTOS["20 MP (Kleiber_by_Lukas_Baubkus.jpg)"]) as source:
        source.resize(BIG_SIZE, Image.Resampling.BILINEAR).save(path, quality=90)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})

    rows = []
    for label, path in PHOTOS.items():
        data = path.read_bytes()
        contenders = {
            "ours": ours,
            "naive": naive,
            "vips": vips,
            "floor": floor_for(data),
            "decode": decode_only,
        }
        medians = time_contenders(data, contenders, args.repeat)
        rows.append((label, medians))
        print(label, {k: f"{v:.1f} ms" for k, v in medians.items()}, file=sys.stderr)

    with tempfile.TemporaryDirectory() as tmp:
        big = make_big_jpeg(Path(tmp))
        peaks = {mode: child_peak_rss_mb(big, mode) for mode in ("baseline", "ours", "naive")}

    print(f"\n### Image pipeline, one core, {args.repeat} runs each (median), filter {FILTER}\n")
    print(
        "| photo | ours | (a) naive Pillow | (b) pyvips | (c) encodes only "
        "| ours/(a) | ours/(b) | ours/(c) | JPEG decode alone, at ours' DCT scale |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, m in rows:
        print(
            f"| {label} | {m['ours']:.0f} ms | {m['naive']:.0f} ms | {m['vips']:.0f} ms "
            f"| {m['floor']:.0f} ms | {m['ours'] / m['naive']:.2f} | {m['ours'] / m['vips']:.2f} "
            f"| {m['ours'] / m['floor']:.2f} | {m['decode']:.0f} ms |"
        )
    print(
        f"\nPeak RSS on a {BIG_SIZE[0]}x{BIG_SIZE[1]} ({BIG_SIZE[0] * BIG_SIZE[1] / 1e6:.0f} MP) "
        "JPEG, each in a fresh process:\n"
    )
    print("| process | peak RSS |")
    print("|---|---:|")
    print(f"| import + read the file only | {peaks['baseline']:.0f} MB |")
    print(f"| ours (process_image) | {peaks['ours']:.0f} MB |")
    print(f"| (a) naive Pillow | {peaks['naive']:.0f} MB |")


if __name__ == "__main__":
    main()
