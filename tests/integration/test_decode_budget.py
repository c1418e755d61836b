"""Decoding runs in child processes under a CPU, memory and wall-clock budget: a hostile file
costs one job, never the worker, and other users' photos go on being processed."""

from __future__ import annotations

import errno
import io
import mmap
import os
import resource
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from glimpse.media import decoding, images
from glimpse.media.decoding import DecodeBudget, DecodeBudgetExceeded, DecoderDied, run_in_child
from tests.conftest import Glimpse, jpeg_bytes
from tests.unit.media.test_structure import lying_jpeg, scan_bomb

BUDGET = DecodeBudget(cpu_seconds=1, memory_bytes=512 * 2**20, timeout_seconds=30)


# Stand-ins run in the child: module-level, so that they travel by pickle as references.


def burn_cpu(seconds: float | None) -> float:
    """Spin for `seconds` of this process's CPU time (forever with None)."""
    start = time.process_time()
    while seconds is None or time.process_time() - start < seconds:
        sum(range(10_000))
    return time.process_time() - start


def allocate(n_bytes: int, keep: bool = False) -> int:
    block = bytearray(n_bytes)
    block[::4096] = b"\x01" * len(block[::4096])  # touch every page: resident, not just reserved
    if keep:
        _kept.append(block)
    return len(block)


_kept: list[bytearray] = []


def map_address_space(n_bytes: int) -> int:
    """Reserve address space and keep it, untouched (so not resident), as codecs' buffer pools
    do with what they allocated for an earlier file."""
    _kept_maps.append(mmap.mmap(-1, n_bytes))
    return os.getpid()


_kept_maps: list[mmap.mmap] = []


def address_space() -> int:
    return decoding._memory_bytes()[0]


def burn_cpu_when_marked(data: bytes, filter_name: str) -> images.ProcessedImage:
    """process_image, except for files carrying the marker: those decode forever."""
    if b"BURN-CPU" in data:
        burn_cpu(None)
    return images.process_image(data, filter_name)


def test_the_work_runs_in_another_process() -> None:
    assert run_in_child(BUDGET, os.getpid) != os.getpid()


def test_a_task_past_its_cpu_budget_is_stopped_and_the_next_one_runs() -> None:
    with pytest.raises(DecodeBudgetExceeded, match=r"more than 1 s of CPU"):
        run_in_child(BUDGET, burn_cpu, None)
    assert run_in_child(BUDGET, sum, [1, 2, 3]) == 6


def test_the_cpu_budget_is_per_task_in_a_reused_child() -> None:
    pids = set()
    for _ in range(3):
        assert run_in_child(BUDGET, burn_cpu, 0.5) >= 0.5
        pids.add(run_in_child(BUDGET, os.getpid))
    assert len(pids) == 1  # warm: the same child did all of it, 1.5 s of CPU in total


def test_a_task_past_its_memory_budget_is_stopped() -> None:
    # (Room for a child that imported this test suite, about 300 MB of address space.)
    small = DecodeBudget(cpu_seconds=10, memory_bytes=448 * 2**20, timeout_seconds=30)
    with pytest.raises(DecodeBudgetExceeded, match=r"more than 448 MB of memory"):
        run_in_child(small, allocate, 512 * 2**20)
    assert run_in_child(small, allocate, 2**20) == 2**20


def test_a_task_past_its_wall_clock_budget_is_killed() -> None:
    quick = DecodeBudget(cpu_seconds=10, memory_bytes=512 * 2**20, timeout_seconds=0.5)
    with pytest.raises(DecodeBudgetExceeded, match=r"longer than 0.5 s"):
        run_in_child(quick, time.sleep, 60)
    assert run_in_child(quick, sum, [1]) == 1


def test_a_child_left_big_by_a_task_is_replaced() -> None:
    first = run_in_child(BUDGET, os.getpid)
    assert run_in_child(BUDGET, os.getpid) == first
    run_in_child(BUDGET, allocate, decoding.RECYCLE_RSS_BYTES + 2**20, True)
    assert run_in_child(BUDGET, os.getpid) != first


def test_what_a_child_kept_mapped_does_not_count_against_the_next_task() -> None:
    budget = DecodeBudget(cpu_seconds=10, memory_bytes=768 * 2**20, timeout_seconds=30)
    fresh = run_in_child(budget, address_space)
    # The task leaves its child 100 MB short of the budget: a task needing 200 MB does not fit
    # there, and does in a fresh child.
    run_in_child(budget, map_address_space, budget.memory_bytes - fresh - 100 * 2**20)
    assert run_in_child(budget, allocate, 200 * 2**20) == 200 * 2**20


def loaded_modules() -> set[str]:
    return set(sys.modules)


def leave_address_space_full() -> int:
    """What a task under a tight memory budget leaves behind: no room for one more mapping
    (the limit is below what the process already has mapped)."""
    with open("/proc/self/statm") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (size // 2, resource.getrlimit(resource.RLIMIT_AS)[1]))
    return os.getpid()


def test_a_previous_task_s_budget_does_not_hold_while_the_next_one_is_received() -> None:
    # Receiving a task imports the module of its function (here one no child has loaded yet:
    # not imported at the top, or children would import it with this module).
    from tests.integration import decoding_probe

    assert decoding_probe.__name__ not in run_in_child(BUDGET, loaded_modules)
    pid = run_in_child(BUDGET, leave_address_space_full)
    assert run_in_child(BUDGET, decoding_probe.double, 21) == 42
    assert run_in_child(BUDGET, os.getpid) == pid


def test_an_idle_child_killed_while_it_waited_is_replaced_without_an_error() -> None:
    pid = run_in_child(BUDGET, os.getpid)
    [idle] = [c for c in decoding._POOL._idle if c.process.pid == pid]
    os.kill(pid, signal.SIGKILL)
    idle.process.join(10)
    assert run_in_child(BUDGET, os.getpid) != pid


def test_a_child_that_dies_otherwise_is_reported_as_such() -> None:
    with pytest.raises(DecoderDied):
        run_in_child(BUDGET, os._exit, 3)
    assert run_in_child(BUDGET, sum, [2]) == 2


def test_the_function_s_own_errors_come_back_as_they_are() -> None:
    with pytest.raises(images.UndecodableImage):
        decoding.decode_in_child(b"not an image", "normal", BUDGET)
    processed = decoding.decode_in_child(jpeg_bytes((640, 480)), "normal", BUDGET)
    assert (processed.width, processed.height) == (640, 480)


def test_a_file_is_read_by_the_child(tmp_path: Path) -> None:
    path = tmp_path / "original"
    path.write_bytes(jpeg_bytes((640, 480)))
    processed = decoding.decode_in_child(path, "normal", BUDGET)
    assert (processed.width, processed.height) == (640, 480)
    with pytest.raises(decoding.OriginalUnreadable) as raised:
        decoding.decode_in_child(tmp_path / "gone", "normal", BUDGET)
    assert raised.value.errno == errno.ENOENT


# -- Through the worker -------------------------------------------------------------------


async def _post(glimpse: Glimpse, headers: dict[str, str], post_id: str) -> Any:
    response = await glimpse.client.get(f"/api/v1/posts/{post_id}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def _with_comment(jpeg: bytes, comment: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


async def _race(glimpse: Glimpse, hostile: bytes) -> tuple[Any, Any]:
    """Mallory uploads `hostile`, then Bob an ordinary photo; the worker runs everything."""
    mallory = await glimpse.signup("mallory")
    bob = await glimpse.signup("bob")
    bad = await glimpse.upload(mallory, [("bomb.jpg", hostile)])
    assert bad.status_code == 202, bad.text
    good = await glimpse.upload(bob, [("photo.jpg", jpeg_bytes())])
    assert good.status_code == 202, good.text
    assert await glimpse.run_jobs() == 3  # the two photos, and the fan-out of Bob's post
    return await _post(glimpse, mallory, bad.json()["id"]), await _post(
        glimpse, bob, good.json()["id"]
    )


def _past_the_upload_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API refuses such files at upload (tests/api/test_hostile_images.py); the worker must
    hold too, for files that came another way (an import, a store written by older code)."""
    monkeypatch.setattr(images, "check_file_structure", lambda path: None)


async def test_a_scan_bomb_fails_as_too_complex_and_another_user_s_photo_gets_ready(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    _past_the_upload_check(monkeypatch)
    bad, good = await _race(glimpse, scan_bomb(25_000))
    assert bad["status"] == "failed"
    assert bad["error"]["code"] == "image_too_complex"
    assert "scans" in bad["error"]["message"]
    assert good["status"] == "ready"


async def test_a_jpeg_lying_about_its_size_fails_as_undecodable(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    _past_the_upload_check(monkeypatch)
    bad, good = await _race(glimpse, lying_jpeg((7000, 7000)))
    assert (bad["status"], bad["error"]["code"]) == ("failed", "undecodable_image")
    assert good["status"] == "ready"


@pytest.mark.parametrize("settings", [{"decode_cpu_seconds": 1}], indirect=True)
async def test_a_decode_past_its_cpu_budget_fails_the_post_and_the_worker_goes_on(
    glimpse: Glimpse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "process_image", burn_cpu_when_marked)
    bad, good = await _race(glimpse, _with_comment(jpeg_bytes(), b"BURN-CPU"))
    assert (bad["status"], bad["error"]["code"]) == ("failed", "image_too_complex")
    assert "1 s of CPU" in bad["error"]["message"]
    assert good["status"] == "ready"


@pytest.mark.parametrize("settings", [{"decode_memory_bytes": 256 * 2**20}], indirect=True)
async def test_a_decode_past_its_memory_budget_fails_the_post_and_the_worker_goes_on(
    glimpse: Glimpse,
) -> None:
    # 48 MP of one colour: a 150 KB file whose decoded pixels take 192 MB, and more to resize.
    out = io.BytesIO()
    Image.new("RGB", (8000, 6000), "teal").save(out, "PNG")
    bad, good = await _race(glimpse, out.getvalue())
    assert (bad["status"], bad["error"]["code"]) == ("failed", "image_too_complex")
    assert "MB of memory" in bad["error"]["message"]
    assert good["status"] == "ready"


# the wall-clock budget is what stops the child, not some later deadline.
def test_the_wall_clock_budget_stops_a_task_promptly() -> None:
    import time

    from glimpse.media.decoding import DecodeBudget, DecodeBudgetExceeded, run_in_child

    quick = DecodeBudget(cpu_seconds=10, memory_bytes=512 * 2**20, timeout_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(DecodeBudgetExceeded):
        run_in_child(quick, time.sleep, 60)
    assert time.monotonic() - started < 5  # ten times the budget: room for a loaded machine


def _refuse_to_unpickle() -> None:
    raise RuntimeError("this answer cannot be read back")


class _Unreadable:
    """Pickles in the child; unpickling it in the worker raises."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse_to_unpickle, ())


def answer_that_does_not_unpickle() -> _Unreadable:
    return _Unreadable()


def test_a_child_whose_answer_cannot_be_read_is_stopped_not_kept() -> None:
    import multiprocessing

    before = {c.pid for c in multiprocessing.active_children()}
    with pytest.raises(RuntimeError, match="cannot be read back"):
        run_in_child(BUDGET, answer_that_does_not_unpickle)
    idle = {c.process.pid for c in decoding._POOL._idle}
    left_running = {c.pid for c in multiprocessing.active_children()} - before - idle
    assert left_running == set()
    assert run_in_child(BUDGET, sum, [1, 2]) == 3


def allow_core_dumps() -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (resource.getrlimit(resource.RLIMIT_CORE)[1],) * 2)
    return os.getpid()


def core_limit() -> tuple[int, int]:
    return os.getpid(), resource.getrlimit(resource.RLIMIT_CORE)[0]


def test_no_task_may_write_a_core_dump_when_its_cpu_budget_kills_it() -> None:
    # Whatever a previous task left (here: core dumps allowed), each task runs without them.
    pid = run_in_child(BUDGET, allow_core_dumps)
    assert run_in_child(BUDGET, core_limit) == (pid, 0)


_ORPHAN_SCRIPT = """
import sys, threading, time
from glimpse.media import decoding
if __name__ == "__main__":
    budget = decoding.DecodeBudget(cpu_seconds=600, memory_bytes=2**31, timeout_seconds=600)
    threading.Thread(
        target=decoding.run_in_child, args=(budget, time.sleep, 600), daemon=True
    ).start()
    print("started", flush=True)
    time.sleep(600)
"""


def test_a_decoding_child_dies_with_the_process_it_works_for(tmp_path: Path) -> None:
    """A worker killed mid-transcode leaves no child decoding for nobody (for up to its
    budget's 25 minutes, a core and staging space each)."""
    psutil = pytest.importorskip("psutil")
    script = tmp_path / "user.py"
    script.write_text(_ORPHAN_SCRIPT)
    user = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert user.stdout is not None and user.stdout.readline().strip() == "started"
        # The task's child is a grandchild (the fork server makes it): wait until it exists.
        deadline = time.monotonic() + 30
        children: list[Any] = []
        while time.monotonic() < deadline:
            children = [
                c
                for c in psutil.Process(user.pid).children(recursive=True)
                if "forkserver" in " ".join(c.cmdline())
                and c.ppid() != user.pid  # the decoding child, not the fork server itself
            ]
            if children:
                break
            time.sleep(0.1)
        assert children, "the decoding child never started"
    finally:
        user.send_signal(signal.SIGKILL)
        user.wait()
    _, alive = psutil.wait_procs(children, timeout=15)
    for straggler in alive:
        straggler.kill()
    assert not alive, "the decoding child outlived the process it worked for"


def test_shutting_down_stops_a_busy_child_and_frees_the_thread_waiting_on_it() -> None:
    # A worker that gave its unfinished jobs back must be able to exit: a thread waiting on a
    # child mid-transcode (up to its 25-minute budget) would hold the process's exit.
    import threading

    outcome: list[BaseException] = []

    def wait_on_child() -> None:
        try:
            run_in_child(
                DecodeBudget(cpu_seconds=600, memory_bytes=2**30, timeout_seconds=600),
                burn_cpu,
                None,
            )
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait_on_child, daemon=True)
    waiting.start()
    deadline = time.monotonic() + 30
    while not decoding._POOL._busy and time.monotonic() < deadline:
        time.sleep(0.01)
    decoding.shutdown()
    waiting.join(timeout=30)
    assert not waiting.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], DecoderDied)


def test_a_child_that_keeps_too_much_mapped_is_replaced() -> None:
    roomy = DecodeBudget(cpu_seconds=10, memory_bytes=4 * 2**30, timeout_seconds=30)
    first = run_in_child(roomy, os.getpid)
    assert run_in_child(roomy, os.getpid) == first  # small tasks: the same child
    assert run_in_child(roomy, map_address_space, decoding.RECYCLE_ADDRESS_SPACE_BYTES) == first
    assert run_in_child(roomy, os.getpid) != first


def fail_to_map_a_module() -> None:
    raise ImportError("libfoo.so: failed to map segment from shared object")


def test_a_module_that_cannot_be_mapped_under_the_budget_is_the_budget() -> None:
    # What a child left near its budget met when a file made it load a module for the first
    # time: a refusal for want of memory (and a new child), never an error of the server.
    pid = run_in_child(BUDGET, os.getpid)
    with pytest.raises(DecodeBudgetExceeded):
        run_in_child(BUDGET, fail_to_map_a_module)
    assert run_in_child(BUDGET, os.getpid) != pid
