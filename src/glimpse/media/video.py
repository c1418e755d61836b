"""The video adapter: probing and transcoding with PyAV (FFmpeg's libraries, bundled in its wheel).

Runs only in a decoding child (media/decoding.py), never in the API's or the worker's own process:
FFmpeg's demuxers and decoders read hostile bytes. Everything it decides (limits, sizes, crops,
bitrates, the poster's moment, which frames a slow-motion clip keeps) comes from the pure
functions of media/video_planning.py; this module only measures and applies.

Output is meant to be deterministic (one encoder thread, no timestamps or version strings
written, no AVX-512 in x264: see `x264_asm_flags`), so that a job run twice usually makes
byte-identical files and the same content-addressed keys; an outside run once saw one rendition
of a VP9 source differ, so nothing relies on it: a rendition replaced by a second run is purged
like any other.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import math
import os
import platform
import resource
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import av.error
from av.audio.resampler import AudioResampler
from av.filter import Graph
from av.video.frame import PictureType, VideoFrame
from PIL import Image

from glimpse.media import images
from glimpse.media.sniff import MediaType, iso_bmff_file_truncation
from glimpse.media.video_planning import (
    CRF,
    MAX_FRAME_RATE,
    MAX_LONG_SIDE,
    MAX_SHORT_SIDE,
    OUTPUT_MAX_FRAME_RATE,
    POSTER_VARIANT,
    X264_PRESET,
    VideoProbe,
    VideoVariantPlan,
    check_limits,
    keeps_frame,
    plan_variants,
    poster_time,
    progress_percent,
    quarter_turns,
    unsupported_codec,
    upright_size,
)

# The demuxer each accepted type is opened with. Named, never guessed: FFmpeg's guess could pick
# a demuxer that follows URLs (an HLS playlist) for bytes that merely look like one.
_DEMUXERS = {MediaType.MP4: "mov", MediaType.MOV: "mov", MediaType.WEBM: "matroska"}
# AAC at the rate and layout every browser plays.
AUDIO_RATE = 48_000
_AUDIO_FRAME = 1024
# How often (in seconds of the source) the progress file is rewritten.
_PROGRESS_EVERY_S = 1.0
# A header may understate the length; decoding stops this far past the limit.
_DURATION_SLACK_S = 1.0
# Packets of the picture stream read before the upload's check gives up on a first frame.
PROBE_MAX_PACKETS = 300


def _reason(exc: Exception) -> str:
    """FFmpeg's reason in words, without what else its message names: the server's own staging
    path and FFmpeg's error number are no business of the client's."""
    reason = getattr(exc, "strerror", None)
    return reason[:1].lower() + reason[1:] if isinstance(reason, str) and reason else "unknown"


class UnreadableVideo(Exception):
    """permanent: the bytes are not a video FFmpeg can demux and decode"""


class VideoRefused(Exception):
    """permanent: the video is readable but outside a limit or a codec Glimpse handles; `code`
    is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        # Both in args: it crosses from the decoding child by pickle, which rebuilds it from
        # them (with the message alone it would not rebuild, and every refusal became a retry).
        super().__init__(code, message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VideoFile:
    """One encoded rendition, written to a file in the staging folder (too large to pass
    between processes as bytes)."""

    name: str
    content_type: str
    width: int
    height: int
    path: Path
    size: int


@dataclass(frozen=True)
class ProcessedVideo:
    """What transcoding made: width/height are `mp4_720`'s (upright), the blurhash the poster's."""

    width: int
    height: int
    blurhash: str
    duration_s: float
    variants: list[images.EncodedVariant | VideoFile] = field(default_factory=list)


def probe_video(path: Path, media_type: MediaType) -> VideoProbe:
    """Container, codecs, stored size, rotation, frame rate and duration, from the header and
    the first decoded frame (which proves the picture data is there). Raises UnreadableVideo."""
    if media_type in (MediaType.MP4, MediaType.MOV):
        # A phone upload cut off mid-transfer: its first frames may well decode, so it would be
        # accepted here and fail in the worker, with its post and original kept.
        cut = iso_bmff_file_truncation(path)
        if cut is not None:
            raise UnreadableVideo(f"the file is incomplete: {cut}")
    with _opened(path, media_type) as container:
        return _probe(container)


def _probe(container: Any) -> VideoProbe:
    if not container.streams.video:
        raise UnreadableVideo("the file holds no picture, only sound or data")
    stream = container.streams.video[0]
    # The codec's own name, not its decoder's: AV1 is decoded by "libdav1d", Opus may be by
    # "libopus", and the list of what Glimpse handles names codecs.
    codec = stream.codec_context.codec.canonical_name
    audio = (
        container.streams.audio[0].codec_context.codec.canonical_name
        if container.streams.audio
        else None
    )
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    durations = [container.duration / 1_000_000 if container.duration else 0.0]
    for s in (*container.streams.video, *container.streams.audio):
        if s.duration and s.time_base:
            durations.append(float(s.duration * s.time_base))
    first = None
    try:
        for packets, packet in enumerate(container.demux(stream), start=1):
            for frame in packet.decode():
                first = frame
                break
            if first is not None:
                break
            # A real video shows its first picture within a few packets (a decoder's frame
            # threads hold a handful back); a file of thousands that decode to nothing would
            # hold the upload's check for its whole budget.
            if packets >= PROBE_MAX_PACKETS:
                raise UnreadableVideo(
                    f"the file shows no picture in its first {PROBE_MAX_PACKETS} packets"
                )
    except av.error.FFmpegError as exc:
        _raise_if_out_of_memory(exc)
        raise UnreadableVideo(f"the picture cannot be decoded: {_reason(exc)}") from None
    if first is None:
        raise UnreadableVideo("the file holds no picture that can be decoded")
    aspect = stream.sample_aspect_ratio
    return VideoProbe(
        container=container.format.name,
        video_codec=codec,
        width=first.width,
        height=first.height,
        rotation=_rotation(first.rotation),
        frame_rate=float(rate) if rate else 0.0,
        # The longest of what the container and each stream declare: a header that understates
        # one of them is caught by the longest, and decoding stops at the limit in any case.
        # (Never below zero: a header may declare a negative length.)
        duration_s=max([0.0, *(d for d in durations if math.isfinite(d))]),
        audio_codec=audio,
        pixel_aspect=Fraction(aspect) if aspect else Fraction(1),
        start_s=float(first.pts * first.time_base) if first.pts is not None else 0.0,
    )


def _rotation(degrees: float | None) -> int:
    """The frame's display rotation, or none when the display matrix names no rotation. A
    matrix of all zeros has no angle: FFmpeg's NaN reaches Python as INT_MIN through PyAV's
    int cast, and turned into quarter turns it would turn an upright picture over."""
    if degrees is None or not math.isfinite(degrees) or abs(degrees) > 360:
        return 0
    return round(degrees)


def _raise_if_out_of_memory(exc: Exception) -> None:
    """FFmpeg out of memory is the decoding child's memory budget running out (RLIMIT_AS):
    MemoryError says so (the child is replaced, the file refused as too complex), where a
    damaged-video verdict would blame the file for what may be the child's state. (EAGAIN is
    how a decoder says it could not start its threads: no address space left for their stacks.
    Its other meaning, "feed me more", PyAV handles inside decode() and never raises.)

    Not every library says ENOMEM: x264 reports a failed malloc as a generic external error,
    and some decoders as invalid data. So any FFmpeg error met once this process's address
    space has grown, since the video was opened, to within a few allocations of its limit is
    the budget too (under a 256 MB budget every video failed as "damaged" otherwise)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOMEM, errno.EAGAIN):
        raise MemoryError from None
    peak = _peak_address_space()
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if (
        peak is not None
        and limit != resource.RLIM_INFINITY
        and peak > _peak_when_opened
        and peak >= limit - _ALLOCATION_ROOM_BYTES
    ):
        raise MemoryError from None


# Larger than any one allocation FFmpeg or x264 makes for a 4K frame (a frame is 12 MB; the
# failed mallocs seen were under 2 MB): a peak this close to the limit means one did not fit.
_ALLOCATION_ROOM_BYTES = 64 * 2**20
# The peak address space when the video was last opened: an earlier task of the same child
# may have come close to its own limit without failing, which says nothing about this one.
_peak_when_opened = 0


def _peak_address_space() -> int | None:
    """This process's peak address space (VmPeak), in bytes; None where there is no /proc."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _raise_if_unreadable(path: Path) -> None:
    """Raises the OSError a read of the file meets. A demuxer reports a read that failed (EIO
    from a failing disk) as invalid data, which would fail the post for good where the disk's
    fault is worth another try; this runs only once the file was refused."""
    with path.open("rb") as file:
        while file.read(2**20):
            pass


@contextlib.contextmanager
def _opened(path: Path, media_type: MediaType) -> Iterator[Any]:
    global _peak_when_opened
    _peak_when_opened = _peak_address_space() or 0
    try:
        container = av.open(
            str(path), format=_DEMUXERS[media_type], metadata_errors="ignore", mode="r"
        )
    except av.error.FFmpegError as exc:
        _raise_if_out_of_memory(exc)
        if isinstance(exc, OSError) and not isinstance(exc, av.error.InvalidDataError):
            raise OSError(exc.errno, exc.strerror) from None  # the disk's fault, not the file's
        _raise_if_unreadable(path)
        raise UnreadableVideo(f"the file is not a readable video: {_reason(exc)}") from None
    try:
        yield container
    except av.error.FFmpegError as exc:
        _raise_if_out_of_memory(exc)
        raise UnreadableVideo(f"the video is damaged: {_reason(exc)}") from None
    finally:
        container.close()


def transcode_video(
    path: Path,
    media_type: MediaType,
    staging: Path,
    story: bool,
    max_seconds: float,
    progress: Path | None = None,
    name_prefix: str = "transcode-",
) -> ProcessedVideo:
    """Every rendition of a video: `mp4_720`, `mp4_480` (and `mp4_story` for a story), H.264
    High + AAC with the index first (+faststart), turned upright, never upscaled, stripped of
    metadata; and the `poster` (JPEG and WebP). Files are written under `staging`, their names
    starting with `name_prefix` (so that whoever gave it can remove them should this process be
    killed); `progress` (if given) is rewritten with the percentage done as it goes.

    Raises UnreadableVideo, VideoRefused (a limit, checked again against what is decoded:
    a header can understate the length), OSError when the original cannot be read.
    """
    with _opened(path, media_type) as container:
        probe = _probe(container)
        problem = unsupported_codec(probe)
        if problem is not None:
            raise VideoRefused("unsupported_video_codec", f"Glimpse cannot play {problem}.")
        breach = check_limits(probe, max_seconds, story)
        if breach is not None:
            raise VideoRefused(breach.code, breach.message)
    with _opened(path, media_type) as container:
        return _Transcode(
            container, probe, staging, story, max_seconds, progress, name_prefix
        ).run()


class _Output:
    """One MP4 rendition being written: its filter chain, encoders and file."""

    def __init__(
        self, plan: VideoVariantPlan, source: Any, probe: VideoProbe, path: Path, audio: bool
    ) -> None:
        self.plan, self.path = plan, path
        self.graph = _filter_graph(source, probe, plan)
        # No version strings, no creation time: the same input always gives the same bytes.
        with _writing():
            self.container = av.open(
                str(path),
                mode="w",
                format="mp4",
                container_options={"movflags": "+faststart", "fflags": "+bitexact"},
            )
        rate = Fraction(min(probe.frame_rate or 30.0, OUTPUT_MAX_FRAME_RATE)).limit_denominator(
            1001
        )
        self.video = self.container.add_stream("libx264", rate=rate)
        codec = self.video.codec_context
        codec.width, codec.height, codec.pix_fmt = plan.width, plan.height, "yuv420p"
        codec.time_base = source.time_base
        self.video.time_base = source.time_base
        codec.thread_count = 1
        codec.options = {
            "preset": X264_PRESET,
            "crf": str(CRF),
            "profile": "high",
            "maxrate": str(plan.max_bitrate),
            "bufsize": str(plan.buffer_bits),
            "flags": "+bitexact",
        }
        asm = x264_asm_flags()
        if asm is not None:
            codec.options = {**codec.options, "x264-params": f"asm={asm}"}
        self.audio = None
        if audio:
            self.audio = self.container.add_stream("aac", rate=AUDIO_RATE)
            acodec = self.audio.codec_context
            acodec.bit_rate = plan.audio_bitrate
            acodec.layout = "stereo"
            acodec.format = "fltp"
            acodec.options = {"flags": "+bitexact"}

    def encode_video(self, frame: Any) -> None:
        for packet in self.video.encode(frame):
            with _writing():
                self.container.mux(packet)

    def encode_audio(self, frame: Any) -> None:
        assert self.audio is not None
        for packet in self.audio.encode(frame):
            with _writing():
                self.container.mux(packet)

    def close(self) -> None:
        self.encode_video(None)
        if self.audio is not None:
            self.encode_audio(None)
        with _writing():  # (+faststart rewrites the whole file here)
            self.container.close()


# x264's AVX-512 bit (X264_CPU_AVX512 in x264.h).
_X264_CPU_AVX512 = 1 << 16


@functools.cache
def x264_asm_flags() -> int | None:
    """The CPU features x264 may use here: all it detects but AVX-512, or None to leave it its
    own choice (no AVX-512 on this machine, or x264's library not found).

    x264's AVX-512 code reads memory it never wrote while it plans a frame's quantisers
    (macroblock-tree), so what it encodes depends on what that memory last held: a rendition
    made twice on an AVX-512 machine could get other bytes, and another content-addressed key,
    in a process whose memory had a different history (a decoding child reused after other
    tasks). Without AVX-512 it makes the same bytes as before, whatever the memory holds (its
    AVX2 code is what an AVX-512 machine ran for everything else already)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    library = _loaded_library("libx264")
    if library is None:
        return None
    try:
        detect = ctypes.CDLL(library).x264_cpu_detect
    except (OSError, AttributeError):
        return None
    detect.restype, detect.argtypes = ctypes.c_uint32, []
    flags = int(detect())
    return flags & ~_X264_CPU_AVX512 if flags & _X264_CPU_AVX512 else None


def _loaded_library(name: str) -> str | None:
    """The path of a shared library this process has loaded whose file name starts with `name`
    (PyAV's wheel bundles x264 under a name of its own, loaded with libavcodec)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                path = fields[5].strip() if len(fields) == 6 else ""
                base = os.path.basename(path)
                if path.startswith("/") and base.startswith(name) and ".so" in base:
                    return path
    except OSError:
        return None
    return None


# What writing a rendition fails with when the fault is this machine's (a full, read-only or
# failing disk), not the video's.
_DISK_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG, errno.EACCES, errno.EPERM}
)


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """FFmpeg's write errors leave as plain OSError: inside `_opened` they would otherwise read
    as a damaged video, and a full disk would fail the post for good instead of being retried
    once there is room."""
    try:
        yield
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            raise OSError(exc.errno, exc.strerror) from None
        raise


def _filter_graph(source: Any, probe: VideoProbe, plan: VideoVariantPlan) -> Graph:
    """buffer -> turn upright -> crop (stories) -> scale -> square pixels, yuv420p -> sink."""
    steps: list[tuple[str, str]] = []
    turns = quarter_turns(probe.rotation)
    # `rotation` is counter-clockwise (as ffprobe reports it), and the picture must be turned
    # that way to be shown upright: as FFmpeg's command line does when it autorotates.
    if turns == 1:
        steps.append(("transpose", "cclock"))
    elif turns == 2:
        steps += [("hflip", ""), ("vflip", "")]
    elif turns == 3:
        steps.append(("transpose", "clock"))
    if probe.pixel_aspect != 1:
        # Square pixels before cropping, so the crop box is in upright display pixels.
        width, height = upright_size(probe)
        steps.append(("scale", f"{width}:{height}"))
    if plan.crop is not None:
        x, y, w, h = plan.crop
        steps.append(("crop", f"{w}:{h}:{x}:{y}"))
    steps += [
        ("scale", f"{plan.width}:{plan.height}:flags=bicubic"),
        ("setsar", "1"),
        ("format", "yuv420p"),
    ]
    graph = Graph()
    node = graph.add_buffer(template=source)
    for name, args in steps:
        following = graph.add(name, args) if args else graph.add(name)
        node.link_to(following)
        node = following
    sink = graph.add("buffersink")
    node.link_to(sink)
    graph.configure()
    return graph


class _Transcode:
    def __init__(
        self,
        container: Any,
        probe: VideoProbe,
        staging: Path,
        story: bool,
        max_seconds: float,
        progress: Path | None,
        name_prefix: str,
    ) -> None:
        self.container = container
        self.probe = probe
        self.max_seconds = max_seconds
        self.progress = progress
        self.source = container.streams.video[0]
        self.source.codec_context.thread_count = 1
        audio = container.streams.audio
        self.audio_source = audio[0] if audio else None
        self.plans = plan_variants(*upright_size(probe), story)
        self.outputs: list[_Output] = []
        try:
            for plan in self.plans:
                fd, name = tempfile.mkstemp(dir=staging, prefix=name_prefix, suffix=".mp4")
                os.close(fd)
                self.outputs.append(
                    _Output(plan, self.source, probe, Path(name), self.audio_source is not None)
                )
        except BaseException:
            self._discard()
            raise
        self.poster_at = poster_time(probe.duration_s)
        self.poster: Image.Image | None = None
        self.last_frame: Any = None
        self.start_s = probe.start_s
        self.kept_s: float | None = None
        self.end_s = 0.0
        # Decoding work is bounded by what the limits allow, whatever time the frames claim: at
        # most MAX_FRAME_RATE frames a second of the longest video. (A file of thousands of
        # empty 4K frames at one instant would otherwise hold a video lane for its whole budget.)
        self.decoded = 0
        self.max_decoded = int((max_seconds + _DURATION_SLACK_S + 1) * MAX_FRAME_RATE)
        # ... and frames that do not move time forward are few in a real video (none, once
        # decoded into display order): past a second's worth in a row, it is no video.
        self.last_pts: int | None = None
        self.stalled = 0
        self.reported_s = -_PROGRESS_EVERY_S
        self.resampler = AudioResampler(
            format="fltp", layout="stereo", rate=AUDIO_RATE, frame_size=_AUDIO_FRAME
        )
        self.audio_samples = 0

    def run(self) -> ProcessedVideo:
        try:
            streams = [self.source] + ([self.audio_source] if self.audio_source else [])
            for packet in self.container.demux(*streams):
                if packet.stream is self.source:
                    for frame in packet.decode():
                        self._video_frame(frame)
                else:
                    for aframe in packet.decode():
                        self._audio_frame(aframe)
            for aframe in self.resampler.resample(None) if self.audio_source else []:
                self._encode_audio(aframe)
            if self.kept_s is None:
                raise UnreadableVideo("the file holds no picture that can be decoded")
            for output in self.outputs:
                output.close()
            return self._result()
        except BaseException:
            self._discard()
            raise

    def _video_frame(self, frame: Any) -> None:
        self.decoded += 1
        if self.decoded > self.max_decoded:
            raise VideoRefused(
                "video_too_complex", "This video holds more frames than its length allows."
            )
        # The upload's check saw the first frame only: a stream may grow past 4K after it.
        if frame.width * frame.height > MAX_LONG_SIDE * MAX_SHORT_SIDE:
            raise VideoRefused(
                "too_many_pixels",
                f"A video here may be at most {MAX_LONG_SIDE}x{MAX_SHORT_SIDE} pixels.",
            )
        if self.last_pts is not None and (frame.pts is None or frame.pts <= self.last_pts):
            self.stalled += 1
            if self.stalled > MAX_FRAME_RATE:
                raise VideoRefused(
                    "video_too_complex", "This video holds frames that never move time forward."
                )
        else:
            self.stalled = 0
            self.last_pts = frame.pts
        if frame.pts is None:
            return  # (a frame with no time cannot be placed; decoders give none to real ones)
        elapsed = float(frame.pts * frame.time_base) - self.start_s
        if elapsed < 0:
            return  # before the first frame shown: an edit list's hidden lead-in
        if elapsed > self.max_seconds + _DURATION_SLACK_S:
            raise VideoRefused(
                "video_too_long",
                f"A video here may be at most {self.max_seconds:g} seconds long; this one is"
                " longer than its header says.",
            )
        if not keeps_frame(elapsed, self.kept_s, OUTPUT_MAX_FRAME_RATE):
            return
        self.kept_s = elapsed
        frame.pts = round(elapsed / frame.time_base)
        frame_end = elapsed + (
            float(frame.duration * frame.time_base)
            if frame.duration
            else 1 / max(1.0, min(self.probe.frame_rate or 30, OUTPUT_MAX_FRAME_RATE))
        )
        if frame_end > self.max_seconds + _DURATION_SLACK_S:  # (one frame shown for minutes)
            raise VideoRefused(
                "video_too_long",
                f"A video here may be at most {self.max_seconds:g} seconds long; this one is"
                " longer than its header says.",
            )
        self.end_s = max(self.end_s, frame_end)
        for output in self.outputs:
            output.graph.push(frame)
            while True:
                try:
                    filtered = cast(VideoFrame, output.graph.pull())
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                # Keyframes are the encoder's choice, as on FFmpeg's command line: a source's
                # I-frames would otherwise force ours.
                filtered.pict_type = PictureType.NONE
                if output.plan.name == "mp4_720":
                    self._consider_for_poster(filtered, elapsed)
                output.encode_video(filtered)
        self._report(elapsed)

    def _consider_for_poster(self, frame: Any, elapsed: float) -> None:
        if self.poster is None and elapsed >= self.poster_at:
            self.poster = frame.to_image()
        self.last_frame = frame

    def _audio_frame(self, frame: Any) -> None:
        if frame.pts is None:
            return
        # Sound before the first picture is cut, as an edit list's hidden lead-in of pictures
        # is: the output starts with the first frame shown.
        time_s = float(frame.pts * frame.time_base) - self.start_s
        if time_s < 0 or time_s > self.max_seconds + _DURATION_SLACK_S:
            return
        if self.audio_samples == 0 and time_s > 0:
            # Sound that starts late starts late in the output too.
            self.audio_samples = round(time_s * AUDIO_RATE)
        for resampled in self.resampler.resample(frame):
            self._encode_audio(resampled)

    def _encode_audio(self, frame: Any) -> None:
        frame.pts = self.audio_samples
        frame.time_base = Fraction(1, AUDIO_RATE)
        self.audio_samples += frame.samples
        for output in self.outputs:
            output.encode_audio(frame)

    def _report(self, elapsed: float) -> None:
        if self.progress is None or elapsed - self.reported_s < _PROGRESS_EVERY_S:
            return
        self.reported_s = elapsed
        # Rewritten in place: a reader sees the old number or the new one (a few bytes).
        with contextlib.suppress(OSError):
            self.progress.write_text(str(progress_percent(elapsed, self.probe.duration_s)))

    def _result(self) -> ProcessedVideo:
        poster = self.poster
        if poster is None:  # shorter than the poster's moment
            if self.last_frame is None:
                raise UnreadableVideo("the file holds no picture that can be decoded")
            poster = self.last_frame.to_image()
        variants: list[images.EncodedVariant | VideoFile] = [
            VideoFile(
                o.plan.name,
                MediaType.MP4.value,
                o.plan.width,
                o.plan.height,
                o.path,
                o.path.stat().st_size,
            )
            for o in self.outputs
        ]
        for content_type, data in images.encode_still(poster):
            variants.append(
                images.EncodedVariant(
                    POSTER_VARIANT, content_type, poster.width, poster.height, data
                )
            )
        main = next(o.plan for o in self.outputs if o.plan.name == "mp4_720")
        return ProcessedVideo(
            width=main.width,
            height=main.height,
            blurhash=images.blurhash_of(poster),
            duration_s=round(self.end_s, 3),
            variants=variants,
        )

    def _discard(self) -> None:
        for output in self.outputs:
            with contextlib.suppress(Exception):
                output.container.close()
            with contextlib.suppress(OSError):
                output.path.unlink(missing_ok=True)
