"""AVIF copies against the WebP and JPEG variants: encode time, bytes and PSNR, same photos, same run.

Run from the repository root: `python bench/bench_avif.py [--repeat N] [--core C]`.

For each test photo the pipeline's own `w1080` and `w640` pictures are made once (decode, crop,
orientation, resize: `images.process_image`'s steps), and each is then encoded, interleaved round
by round on one pinned core (the worker's unit of scale), by:

- jpeg:   JPEG q82, optimised (what process_image writes)
- webp:   WebP q80, method 2 (what process_image writes; the reference of the ratios)
- avif9:  AVIF q60 speed 9, one thread (GLIMPSE_AVIF_* defaults: what the AVIF job writes)
- avif8:  AVIF q60 speed 8, one thread (the issue's suggestion)

Times are medians of the rounds; PSNR (RGB, dB) is of each decoded file against the picture it
was encoded from. Then the AVIF job's whole work per photo (`make_avif_variants`: the decode
again, the resizes and both AVIF encodes) against the photo's processing job (`process_image`:
eight JPEG and WebP encodes), both in this process.
"""

from __future__ import annotations

import argparse
import functools
import io
import math
import os
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageChops, ImageStat

from glimpse.media import images
from glimpse.media.filters import apply_filter
from testdata import testdata

PHOTOS = {
    "DSCN0010 0.3 MP": "camera/DSCN0010.jpg",
    "Landscape_6 2.2 MP": "orientation/Landscape_6.jpg",
    "canon_hdr 3.1 MP": "camera/canon_hdr_YES.jpg",
    "iphone_hdr 8 MP": "camera/iphone_hdr_YES.jpg",
    "IMG_5195 HEIC 12 MP": "heic/IMG_5195.HEIC",
    "Kleiber 20 MP": "large/Kleiber_by_Lukas_Baubkus.jpg",
}
SIZES = images.AVIF_VARIANT_NAMES  # w1080, w640
AVIF_QUALITY = 60


def encode_jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=images.JPEG_QUALITY, optimize=True)
    return out.getvalue()


def encode_webp(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "WEBP", quality=images.WEBP_QUALITY, method=images.WEBP_METHOD)
    return out.getvalue()


def avif_at(speed: int) -> Callable[[Image.Image], bytes]:
    return lambda image: images.encode_avif(image, None, AVIF_QUALITY, speed)


ENCODERS: dict[str, Callable[[Image.Image], bytes]] = {
    "jpeg": encode_jpeg,
    "webp": encode_webp,
    "avif9": avif_at(9),
    "avif8": avif_at(8),
}


def pictures(data: bytes) -> dict[str, Image.Image]:
    """The w1080 and w640 pictures process_image encodes (filter `normal`)."""
    decoded = images._decode_checked(data, "normal")
    wanted = [p for p in decoded.plans if p.name in SIZES]
    chain = images._chain_resize(apply_filter(decoded.image, "normal"), wanted)
    return {plan.name: image for plan, image in zip(wanted, chain, strict=True)}


def psnr(encoded: bytes, reference: Image.Image) -> float:
    with Image.open(io.BytesIO(encoded)) as im:
        decoded = im.convert("RGB")
    diff = ImageChops.difference(decoded, reference)
    mse = sum(ImageStat.Stat(diff).sum2) / (3 * reference.width * reference.height)
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def timed(work: Callable[[], object]) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--core", type=int, default=1, help="the one core to run on")
    args = parser.parse_args()
    os.sched_setaffinity(0, {args.core})
    print(f"Pillow {Image.__version__}, AVIF: {images.avif_available()}, core {args.core}")
    print(f"{args.repeat} rounds, interleaved; medians\n")

    rows = []
    totals: dict[str, list[float]] = {name: [0.0, 0.0] for name in ENCODERS}  # ms, bytes
    for label, relative in PHOTOS.items():
        data = testdata(relative).read_bytes()
        made = pictures(data)
        for size, picture in made.items():
            times: dict[str, list[float]] = {name: [] for name in ENCODERS}
            encoded: dict[str, bytes] = {}
            for _ in range(args.repeat):
                for name, encode in ENCODERS.items():
                    started = time.perf_counter()
                    encoded[name] = encode(picture)
                    times[name].append((time.perf_counter() - started) * 1000)
            medians = {name: statistics.median(t) for name, t in times.items()}
            for name in ENCODERS:
                totals[name][0] += medians[name]
                totals[name][1] += len(encoded[name])
            rows.append((label, size, picture.size, medians, encoded, picture))

    print(
        "| photo | variant | encoder | ms | x WebP time | KB | x WebP bytes | PSNR dB |"
        "\n|---|---|---|---:|---:|---:|---:|---:|"
    )
    for label, size, dims, medians, encoded, picture in rows:
        for name in ENCODERS:
            print(
                f"| {label} | {size} {dims[0]}x{dims[1]} | {name} | {medians[name]:.1f} "
                f"| {medians[name] / medians['webp']:.2f} | {len(encoded[name]) / 1024:.1f} "
                f"| {len(encoded[name]) / len(encoded['webp']):.2f} "
                f"| {psnr(encoded[name], picture):.2f} |"
            )
    print("\nAll photos, both sizes (sums of medians):")
    for name, (ms, size) in totals.items():
        print(
            f"  {name:6} {ms:8.1f} ms ({ms / totals['webp'][0]:.2f}x WebP)"
            f"  {size / 1024:8.1f} KB ({size / totals['webp'][1]:.2f}x WebP)"
        )

    print("\nThe AVIF job's work per photo against its processing job's (medians, ms):")
    print("| photo | process_image (8 JPEG+WebP) | make_avif_variants (q60 s9) | ratio |")
    print("|---|---:|---:|---:|")
    for label, relative in PHOTOS.items():
        data = testdata(relative).read_bytes()
        processing, copies = [], []
        for _ in range(args.repeat):
            processing.append(timed(functools.partial(images.process_image, data, "normal")))
            copies.append(
                timed(functools.partial(images.make_avif_variants, data, "normal", AVIF_QUALITY, 9))
            )
        p, c = statistics.median(processing), statistics.median(copies)
        print(f"| {label} | {p:.0f} | {c:.0f} | {c / p:.2f} |")


if __name__ == "__main__":
    main()
