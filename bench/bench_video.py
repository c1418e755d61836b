"""Benchmark video transcoding against Debian's `ffmpeg` command line doing the same encode.

Run from the repository root: `python bench/bench_video.py [--seconds 30] [--rounds 3]`.
Needs the `ffmpeg` command (`apt-get install ffmpeg`) for the reference and for making the
source clip; Glimpse itself never runs it.

The source is a 1080p, 30 fps H.264 + AAC clip of FFmpeg's `testsrc2` pattern (moving, with
detail everywhere) and a tone. Both contenders make the same two renditions from it, `mp4_720`
(1280x720) and `mp4_480` (854x480), with the same settings: one decode, bicubic scaling, libx264
`veryfast` CRF 23 High profile with the bitrate caps of media/video_planning.py, AAC at 128 and 96
kb/s, 48 kHz stereo, +faststart; one thread each, pinned to the same core, interleaved round
by round so that frequency scaling and a neighbour's load hit both alike.

- ours:   glimpse.media.video.transcode_video (in a process of its own, timed around the call;
          it also makes the poster in JPEG and WebP and its blurhash, which ffmpeg does not)
- ffmpeg: the command printed below, timed as a process

The figure is source seconds transcoded per wall-clock second; the ratio is ours / ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from glimpse.media.video_planning import CRF, X264_PRESET, plan_variants

CORE = str(max(os.sched_getaffinity(0)))


def make_source(path: Path, seconds: int) -> None:
    subprocess.run(
        [
            "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size=1920x1080:rate=30:duration={seconds}",
            "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
            "-c:v", "libx264", "-preset", "medium", "-crf", "18", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "192k", "-shortest", str(path),
        ],
        check=True,
    )  # fmt: skip


def ffmpeg_command(source: Path, out: Path) -> list[str]:
    """The same encode as transcode_video, on FFmpeg's command line."""
    p720, p480 = plan_variants(1920, 1080, story=False)
    graph = (
        "[0:v]split=2[a][b];"
        f"[a]scale={p720.width}:{p720.height}:flags=bicubic,setsar=1,format=yuv420p[v720];"
        f"[b]scale={p480.width}:{p480.height}:flags=bicubic,setsar=1,format=yuv420p[v480]"
    )
    command = [
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1",
        "-filter_complex_threads", "1", "-i", str(source), "-filter_complex", graph,
    ]  # fmt: skip
    for plan, label in ((p720, "[v720]"), (p480, "[v480]")):
        command += [
            "-map", label, "-map", "0:a",
            "-c:v", "libx264", "-preset", X264_PRESET, "-crf", str(CRF), "-profile:v", "high",
            "-maxrate", str(plan.max_bitrate), "-bufsize", str(plan.buffer_bits), "-threads", "1",
            "-c:a", "aac", "-b:a", str(plan.audio_bitrate), "-ar", "48000", "-ac", "2",
            "-movflags", "+faststart", str(out / f"{plan.name}.mp4"),
        ]  # fmt: skip
    return command


_OURS = """
import json, sys, time
from pathlib import Path
from glimpse.media.sniff import MediaType
from glimpse.media.video import transcode_video
started = time.perf_counter()
done = transcode_video(Path(sys.argv[1]), MediaType.MP4, Path(sys.argv[2]), False, 3600.0)
seconds = time.perf_counter() - started
sizes = {v.name: v.size for v in done.variants if v.content_type == "video/mp4"}
print(json.dumps({"seconds": seconds, "sizes": sizes}))
"""


def run_ours(source: Path, out: Path) -> tuple[float, dict[str, int]]:
    result = subprocess.run(
        ["taskset", "-c", CORE, sys.executable, "-c", _OURS, str(source), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    answer = json.loads(result.stdout)
    for leftover in out.glob("transcode-*"):
        leftover.unlink()
    return answer["seconds"], answer["sizes"]


def run_ffmpeg(source: Path, out: Path) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    subprocess.run(["taskset", "-c", CORE, *ffmpeg_command(source, out)], check=True)
    seconds = time.perf_counter() - started
    sizes = {name: (out / f"{name}.mp4").stat().st_size for name in ("mp4_720", "mp4_480")}
    return seconds, sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("bench_video needs the ffmpeg command: apt-get install ffmpeg")
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout
    import av

    print(
        f"core {CORE}; {version.splitlines()[0]}; PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})"
    )
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = work / "source.mp4"
        make_source(source, args.seconds)
        print(f"source: {args.seconds} s of 1080p30 H.264 + AAC, {source.stat().st_size} bytes")
        print("ffmpeg command:", " ".join(ffmpeg_command(source, work)))
        times: dict[str, list[float]] = {"ours": [], "ffmpeg": []}
        sizes: dict[str, dict[str, int]] = {}
        for round_ in range(args.rounds):
            for name, run in (("ours", run_ours), ("ffmpeg", run_ffmpeg)):
                seconds, sizes[name] = run(source, work)
                times[name].append(seconds)
                print(f"round {round_ + 1} {name:6s} {seconds:6.2f} s wall")
        speed = {name: args.seconds / statistics.median(t) for name, t in times.items()}
        print()
        for name in ("ours", "ffmpeg"):
            print(
                f"{name:6s} {speed[name]:5.2f} source s per wall s (median of {args.rounds});"
                f" mp4_720 {sizes[name]['mp4_720']} bytes, mp4_480 {sizes[name]['mp4_480']} bytes"
            )
        print(f"ours / ffmpeg: {speed['ours'] / speed['ffmpeg']:.3f}")


if __name__ == "__main__":
    main()
