"""Names for the processes that hold leases (on id nodes, on jobs), and who can tell they died.

A lease is how a dead process's work comes back to the living, after the lease runs out: for a
video's transcode that is minutes with the post stuck in `processing`. A process on the same
machine can tell sooner: the holder's name says where it ran and its pid, and a pid that is gone
from that machine's process table is a process that will never renew its lease.

"Same machine" must really mean the same process table: a host name is shared by containers
that cannot see each other's processes, and a pid is reused after a reboot. So the name's
machine part is the host name, the kernel's boot id and the pid namespace.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache


@cache
def local_machine() -> str:
    """This process table's name: host, boot and pid namespace (no ':' in it)."""
    parts = [socket.gethostname().replace(":", "_")]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip()[:8])
    except OSError:
        parts.append("?")
    try:
        parts.append(os.readlink("/proc/self/ns/pid").strip("pid:[]"))
    except OSError:
        parts.append("?")
    return "/".join(parts)


def new_holder() -> str:
    """A name no other process has had: machine, pid, and a random part (pids are reused)."""
    return f"{local_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_holder(holder: str) -> bool:
    """True only when `holder` ran in this process table and its pid is not alive in it. (A pid
    reused by another process since reads as alive: its lease then simply runs out.)"""
    machine, _, rest = holder.partition(":")
    pid_text = rest.split(":", 1)[0]
    if machine != local_machine() or "?" in machine or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False
