"""Decoding in a child process, under a budget of CPU time, memory and wall-clock time.

A decoder fed hostile bytes can run for minutes or allocate gigabytes; in the worker's own
process that would stall every job behind it, or get the worker killed, and the job would come
back after its lease to do it again. Here each decode runs in a child process with RLIMIT_CPU and
RLIMIT_AS set, and is killed once its wall-clock time runs out: one hostile file costs one job.

Children are forked from a `forkserver` that has already imported Pillow and the codecs, so they
inherit neither the worker's event loop nor its database connections, and are kept warm: a child
runs task after task (a fresh one would cost 20-40 ms of start-up and first-use work a photo). It
is replaced after a task that left it big, which is what gives memory back: a 50 MP 16-bit PNG
peaks at 620 MB, which glibc would otherwise keep for the process's lifetime; and whenever it had
to be killed. bench/bench_decode_budget.py measures both.
"""

from __future__ import annotations

import ctypes
import errno
import math
import multiprocessing
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from glimpse.media import images, video
from glimpse.media.sniff import MediaType
from glimpse.media.video_planning import VideoProbe

if TYPE_CHECKING:
    from glimpse.config import Settings

T = TypeVar("T")

# Imported once in the fork server, so that each child starts with them loaded. (Only recorded
# here: the server starts with the first decode, never at import.)
_PRELOAD = ["glimpse.media.decoder_preload"]
_CONTEXT = multiprocessing.get_context("forkserver")
_CONTEXT.set_forkserver_preload(_PRELOAD)


@dataclass(frozen=True)
class DecodeBudget:
    cpu_seconds: int
    memory_bytes: int
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeBudget:
        return cls(
            cpu_seconds=settings.decode_cpu_seconds,
            memory_bytes=settings.decode_memory_bytes,
            timeout_seconds=settings.decode_timeout_seconds,
        )

    @classmethod
    def for_video(cls, settings: Settings) -> DecodeBudget:
        """Transcoding a video: minutes, where a photo takes a fraction of a second."""
        return cls(
            cpu_seconds=settings.video_decode_cpu_seconds,
            memory_bytes=settings.video_decode_memory_bytes,
            timeout_seconds=settings.video_decode_timeout_seconds,
        )

    @classmethod
    def for_video_probe(cls, settings: Settings) -> DecodeBudget:
        """Probing an upload's video (its header and first frame) before it is accepted: a
        second of work for any real file; the API waits for it."""
        return cls(
            cpu_seconds=VIDEO_PROBE_CPU_SECONDS,
            memory_bytes=min(VIDEO_PROBE_MEMORY_BYTES, settings.video_decode_memory_bytes),
            timeout_seconds=VIDEO_PROBE_TIMEOUT_SECONDS,
        )


# A 4K HEVC frame decodes in 30 ms, in a child of 260 MB of address space (H.264, VP9 and AV1
# alike); a file that needs far more to show its first one is refused at upload. The API waits
# for each check, and only a few run at once (posts/video_checks.py): a crafted file must not
# hold a slot for long.
VIDEO_PROBE_CPU_SECONDS = 5
VIDEO_PROBE_TIMEOUT_SECONDS = 10.0
VIDEO_PROBE_MEMORY_BYTES = 768 * 2**20


class DecodeBudgetExceeded(Exception):
    """permanent: decoding this file needs more CPU time, memory or time than it is allowed"""


class DecoderDied(Exception):
    """The child died for a reason that is not its budget (a crash, the kernel's OOM killer):
    perhaps the machine's fault, so worth another try."""


class OriginalUnreadable(Exception):
    """The child could not read the original's file (errno and message of the OSError)."""

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(errno, message)
        self.errno = errno
        self.message = message

    def as_os_error(self) -> OSError:
        return OSError(self.errno, self.message)


def decode_in_child(
    source: bytes | Path, filter_name: str, budget: DecodeBudget, story: bool = False
) -> images.ProcessedImage:
    """`images.process_image` in a child process under `budget`, of the original's bytes or of
    its file (which the child then reads itself: the bytes need not pass through the caller,
    which saves about 2 ms a MB). `story` asks for the full-screen variant too.

    Raises what process_image raises (UndecodableImage, TooComplexImage, KeyError),
    OriginalUnreadable, DecodeBudgetExceeded or DecoderDied.
    """
    # process_image is looked up at call time and travels by reference, so that a test can swap
    # in a (module-level) stand-in; one that knows nothing of stories is called as before.
    args: tuple[Any, ...] = (filter_name, True) if story else (filter_name,)
    if isinstance(source, Path):
        processed = run_in_child(budget, _read_then_call, images.process_image, source, *args)
        return cast(images.ProcessedImage, processed)
    return run_in_child(budget, images.process_image, source, *args)


def avif_in_child(
    source: bytes | Path, filter_name: str, quality: int, speed: int, budget: DecodeBudget
) -> list[images.EncodedVariant]:
    """`images.make_avif_variants` in a decoding child under `budget` (the photo's: it decodes
    the same original again), of the original's bytes or of its file. Raises what
    make_avif_variants raises, OriginalUnreadable, DecodeBudgetExceeded or DecoderDied."""
    made = run_in_child(
        budget, _read_then_call, images.make_avif_variants, source, filter_name, quality, speed
    )
    return cast(list[images.EncodedVariant], made)


def probe_video_in_child(path: Path, media_type: MediaType, budget: DecodeBudget) -> VideoProbe:
    """`video.probe_video` in a decoding child. Raises UnreadableVideo, OriginalUnreadable,
    DecodeBudgetExceeded or DecoderDied."""
    probe = run_in_child(budget, _reading_file, video.probe_video, path, media_type)
    return cast(VideoProbe, probe)


def transcode_in_child(
    path: Path,
    media_type: MediaType,
    staging: Path,
    story: bool,
    max_seconds: float,
    budget: DecodeBudget,
    progress: Path | None = None,
    name_prefix: str = "transcode-",
) -> video.ProcessedVideo:
    """`video.transcode_video` in a decoding child under `budget` (the child reads the original
    from its file and writes the renditions to files under `staging`). Raises what
    transcode_video raises, with OriginalUnreadable for OSError, DecodeBudgetExceeded or
    DecoderDied."""
    processed = run_in_child(
        budget,
        _reading_file,
        video.transcode_video,
        path,
        media_type,
        staging,
        story,
        max_seconds,
        progress,
        name_prefix,
    )
    return cast(video.ProcessedVideo, processed)


def _reading_file(function: Callable[..., T], *args: Any) -> T:
    try:
        return function(*args)
    except OSError as exc:
        raise OriginalUnreadable(exc.errno, exc.strerror or str(exc)) from None


def _read_then_call(function: Callable[..., T], path: bytes | Path, *args: Any) -> T:
    if isinstance(path, bytes):  # (the bytes themselves, from a store that is not a disk)
        return function(path, *args)
    try:
        with open(path, "rb") as original:
            data = original.read()
    except OSError as exc:
        raise OriginalUnreadable(exc.errno, exc.strerror or str(exc)) from None
    return function(data, *args)


def run_in_child(budget: DecodeBudget, function: Callable[..., T], *args: Any) -> T:
    """Call `function(*args)` in a decoding child under `budget` and return its result.

    `function`, its arguments and its result travel by pickle. An exception it raises is raised
    here; exceeding the budget raises DecodeBudgetExceeded; any other death, DecoderDied.
    """
    return _POOL.run(budget, function, args)  # type: ignore[no-any-return]


def shutdown() -> None:
    """Stop the children, busy ones included (a worker calls it on its way out, once it has
    given back what it did not finish; they also stop by themselves when this process is
    gone)."""
    _POOL.close()


# A child is replaced once its resident memory passes this after a task (and after it handed
# freed pages back with malloc_trim): whatever a decode left behind, such as fragments of a
# 50 MP PNG's 620 MB, goes with the process. Between tasks a child holds 60-90 MB.
RECYCLE_RSS_BYTES = 256 * 2**20
# ... or once it keeps this much address space mapped (each task's memory budget counts on top
# of what the child had mapped when the task began: see _child_loop).
RECYCLE_ADDRESS_SPACE_BYTES = 2 * 2**30
# ... and after this many tasks in any case, so that slow leaks in codecs cannot accumulate.
RECYCLE_AFTER_TASKS = 200
# Children kept waiting for work; more run only while more decodes run at once.
MAX_IDLE_CHILDREN = 4


class _Child:
    """One decoding process, reused for task after task until it must be replaced."""

    def __init__(self) -> None:
        self.conn, child_end = _CONTEXT.Pipe(duplex=True)
        self.process = _CONTEXT.Process(
            target=_child_loop,
            args=(child_end, os.getpid()),
            name="glimpse-decoder",
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.tasks = 0
        # Address space the child kept mapped after its last task (0 until it ran one).
        self.address_space = 0

    def run(self, budget: DecodeBudget, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """The task's outcome; raises when the child had to be killed or died (it is then
        unusable and the caller must not return it to the pool)."""
        self.tasks += 1
        try:
            self.conn.send((budget, function, args))
        except (BrokenPipeError, EOFError, OSError):
            self.stop()
            raise _death(self.process.exitcode, budget) from None
        if not self.conn.poll(budget.timeout_seconds):
            self.stop()
            raise DecodeBudgetExceeded(
                f"decoding took longer than {budget.timeout_seconds:g} s; the file is too complex"
            )
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            self.stop()
            raise _death(self.process.exitcode, budget) from None

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def kill(self) -> None:
        """From another thread than the one waiting on it (which then sees it die)."""
        if self.process.is_alive():
            self.process.kill()


class _Pool:
    def __init__(self) -> None:
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._lock = threading.Lock()

    def run(self, budget: DecodeBudget, function: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        with self._lock:
            child = self._idle.pop() if self._idle else None
        if child is not None and not child.process.is_alive():  # killed while it waited
            child.stop()
            child = None
        if child is None:
            child = _Child()
        with self._lock:
            self._busy.add(child)
        try:
            kind, value, rss, child.address_space = child.run(budget, function, args)
        except BaseException:
            # Whatever went wrong past the cases run() handles (an answer that does not
            # unpickle, an interrupt), this child's state is unknown: it never runs again.
            child.stop()
            raise
        finally:
            with self._lock:
                self._busy.discard(child)
        if (
            kind == "memory"
            or rss > RECYCLE_RSS_BYTES
            or child.tasks >= RECYCLE_AFTER_TASKS
            or child.address_space > RECYCLE_ADDRESS_SPACE_BYTES
        ):
            child.stop()
        else:
            with self._lock:
                keep = len(self._idle) < MAX_IDLE_CHILDREN
                if keep:
                    self._idle.append(child)
            if not keep:
                child.stop()
        if kind == "ok":
            return value
        if kind == "memory":
            raise DecodeBudgetExceeded(
                f"decoding needed more than {budget.memory_bytes // 2**20} MB of memory;"
                " the file is too complex"
            )
        raise value  # the function's own exception

    def close(self) -> None:
        """Stop every child, busy ones too: a worker stopping has given their jobs back, and
        the threads waiting on them must end for the process to exit."""
        with self._lock:
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for child in idle:
            child.stop()
        for child in busy:
            child.kill()


_POOL = _Pool()
_LIBC = ctypes.CDLL(None)


def _death(exitcode: int | None, budget: DecodeBudget) -> Exception:
    # SIGXCPU is the CPU budget. Anything else (a codec's crash, the kernel's OOM killer's
    # SIGKILL when the machine has less memory than the budget) may not recur: worth a retry.
    if exitcode == -signal.SIGXCPU:
        return DecodeBudgetExceeded(
            f"decoding needed more than {budget.cpu_seconds} s of CPU; the file is too complex"
        )
    return DecoderDied(f"the decoding process died (exit code {exitcode})")


def _child_loop(conn: Connection, user: int) -> None:
    """Run tasks until `user` (the process that made this child) closes its end or dies.

    A task's memory budget is the room a fresh child has under it: what earlier tasks left
    mapped (codecs keep buffers of earlier files; a 4K multi-track one left a child 500 MB
    larger) is added to the limit, so that the same file gets the same verdict whichever child
    decodes it. (Children that keep too much are replaced: RECYCLE_ADDRESS_SPACE_BYTES.)"""
    _die_with(user)
    started_with = 0
    while True:
        # Between tasks the limits are the hard ones: unpickling the next task may import the
        # module of its function, which a previous task's memory budget must not refuse.
        _relax_limits()
        try:
            budget, function, args = conn.recv()
        except (EOFError, OSError):
            return
        except Exception as exc:  # a task that cannot be unpickled here
            conn.send(("error", DecoderDied(f"the task could not be received: {exc!r}"), 0, 0))
            continue
        # RLIMIT_CPU counts the process's whole life: the budget starts from what it has used.
        # SIGXCPU at the soft limit ends the process (Python leaves its default action); the
        # wall-clock timeout backs it up.
        usage = resource.getrusage(resource.RUSAGE_SELF)
        spent = math.ceil(usage.ru_utime + usage.ru_stime)
        _limit(resource.RLIMIT_CPU, spent + budget.cpu_seconds)
        mapped = _memory_bytes()[0]
        started_with = started_with or mapped  # (the first task's: as fresh as it gets)
        _limit(resource.RLIMIT_AS, budget.memory_bytes + max(0, mapped - started_with))
        # A task stopped by its CPU budget dies of SIGXCPU, which would write a core dump as large
        # as its memory budget for each hostile file.
        _limit(resource.RLIMIT_CORE, 0)
        outcome: tuple[str, Any]
        try:
            outcome = ("ok", function(*args))
        except MemoryError:
            outcome = ("memory", None)
        except (ImportError, OSError) as exc:
            # The budget, met where the code maps memory other than by malloc: a module loaded
            # for the first time, a thread's stack.
            outcome = ("memory", None) if _out_of_address_space(exc) else ("error", exc)
        except Exception as exc:
            outcome = ("error", exc)
        # The original (up to 50 MB) and the decoder's buffers are garbage now: hand the pages
        # back before measuring, so that only a child that stays big is replaced.
        del function, args
        _give_back_free_memory()
        mapped, rss = _memory_bytes()
        try:
            conn.send((*outcome, rss, mapped))
        except MemoryError:
            conn.send(("memory", None, rss, mapped))
        except Exception as exc:  # an exception or result that does not pickle
            died = DecoderDied(f"the decoder's answer could not be sent: {exc!r}")
            conn.send(("error", died, rss, mapped))
        del outcome
        _give_back_free_memory()  # (the answer's pickle; the parent is not waiting for this)


def _out_of_address_space(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOMEM, errno.EAGAIN):
        return True
    text = str(exc)
    return "failed to map segment" in text or "Cannot allocate memory" in text


def _die_with(user: int) -> None:
    """Kill this child as soon as the process it decodes for (a worker, the API) is gone, killed
    included. A child mid-transcode would otherwise go on for up to its whole budget (25
    minutes) for nobody, holding a core and writing into staging. (Its parent is the fork
    server, which lives on while any child does: a parent-death signal would never come.)"""

    def watch() -> None:
        try:
            # Readable once that process has exited; opened while it is surely alive (it is
            # waiting for this child to start), so a reused pid cannot fool it.
            handle = os.pidfd_open(user)
        except (AttributeError, OSError):  # no pidfd (an old kernel, not Linux): look every second
            while _alive(user):
                time.sleep(1.0)
        else:
            select.select([handle], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    # The child's whole address space is budgeted (RLIMIT_AS), and glibc gives each new thread
    # a heap arena of its own, 64 MB of address space reserved at its first malloc: this
    # thread's would cost more than most decodes need. One arena for every thread of the child
    # (the codecs' threads too, whose arenas counted against the budget in the same way); and a
    # small stack, where 8 MB would be reserved for a few calls' worth of frames.
    mallopt = getattr(_LIBC, "mallopt", None)
    if mallopt is not None:
        mallopt(_M_ARENA_MAX, 1)
    default = threading.stack_size(_WATCH_STACK_BYTES)
    try:
        threading.Thread(target=watch, name="glimpse-decoder-watch", daemon=True).start()
    finally:
        threading.stack_size(default)


_WATCH_STACK_BYTES = 256 * 1024
_M_ARENA_MAX = -8  # mallopt(3)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _memory_bytes() -> tuple[int, int]:
    """This process's address space and resident memory, in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        size, resident = statm.read().split()[:2]
    page = os.sysconf("SC_PAGE_SIZE")
    return int(size) * page, int(resident) * page


def _give_back_free_memory() -> None:
    """glibc keeps freed heap pages for reuse; malloc_trim returns them to the system (a
    millisecond or two). Elsewhere (musl) there is nothing to call, and recycling does it.
    (No gc.collect(): reference counting has freed the images already, and a full collection
    costs 5-20 ms a task.)"""
    trim = getattr(_LIBC, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _relax_limits() -> None:
    for which in (resource.RLIMIT_CPU, resource.RLIMIT_AS):
        hard = resource.getrlimit(which)[1]
        resource.setrlimit(which, (hard, hard))


def _limit(which: int, soft: int) -> None:
    """Set a soft limit, leaving the hard one as it is (so that the next task may raise it)."""
    hard = resource.getrlimit(which)[1]
    resource.setrlimit(which, (soft if hard == resource.RLIM_INFINITY else min(soft, hard), hard))
