"""Lease holders' names, and telling from them that a process on this machine has died."""

from __future__ import annotations

import os
import subprocess
import sys

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
