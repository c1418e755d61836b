"""Lease holders' names, and telling from them that a process on this machine has died."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from glimpse import holders
from glimpse.holders import is_dead_local_holder, local_machine, new_holder


def _finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_holder_names_this_machine_and_this_process() -> None:
    machine, pid, _ = new_holder().split(":")
    assert machine == local_machine() and int(pid) == os.getpid()
    assert new_holder() != new_holder()


def test_only_a_local_process_that_is_gone_is_dead() -> None:
    assert not is_dead_local_holder(new_holder())  # this one, alive
    assert is_dead_local_holder(f"{local_machine()}:{_finished_pid()}:0a1b2c3d")
    # The same pid on another machine, or in another container of this host (another pid
    # namespace), or after a reboot (another boot id): nothing can be told from here.
    host, boot, pidns = local_machine().split("/")
    for elsewhere in (f"other/{boot}/{pidns}", f"{host}/00000000/{pidns}", f"{host}/{boot}/1"):
        assert not is_dead_local_holder(f"{elsewhere}:{_finished_pid()}:0a1b2c3d")
    assert not is_dead_local_holder(f"{local_machine()}:not-a-pid:0a1b2c3d")
    assert not is_dead_local_holder("")


def test_a_live_process_of_this_machine_is_not_dead() -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not is_dead_local_holder(f"{local_machine()}:{other.pid}:0a1b2c3d")
    finally:
        other.kill()
        other.wait()
    assert is_dead_local_holder(f"{local_machine()}:{other.pid}:0a1b2c3d")


def test_a_machine_name_that_could_not_be_read_in_full_is_never_judged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without a boot id or a pid namespace, two containers of one host would share a name.
    monkeypatch.setattr(holders, "local_machine", lambda: "host/?/4026531836")
    assert not is_dead_local_holder(f"host/?/4026531836:{_finished_pid()}:0a1b2c3d")


def test_a_process_someone_else_owns_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(holders.os, "kill", refused)
    assert not is_dead_local_holder(f"{local_machine()}:{_finished_pid()}:0a1b2c3d")


def test_the_machine_name_carries_this_process_s_pid_namespace() -> None:
    # Two containers of one host may run processes of the same pid: only the namespace (the
    # inode the kernel names it by) tells their holders apart.
    pidns = local_machine().split("/")[2]
    assert pidns == str(os.stat("/proc/self/ns/pid").st_ino)
