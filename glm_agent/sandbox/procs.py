"""Process-tree helpers and the last-resort reaper that keeps sandboxes orphan-free.

Read from /proc directly (no psutil). The reaper kills a sandbox when its owner is collected or the
interpreter exits; bubblewrap's --die-with-parent (or setpriv --pdeathsig) covers the
cases where Python never gets to run its exit handlers (SIGKILL).
"""

from __future__ import annotations

import os
import signal
import weakref
from typing import Callable

__all__ = ["children", "descendants", "pid_alive", "read_status", "kill_pids", "register_reaper"]


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return out


def descendants(pid: int) -> list[int]:
    """All processes below `pid`, parents before children."""
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def pid_alive(pid: int) -> bool:
    """True for a running (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def read_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (VmSize, Threads, NSpid ...); empty if gone."""
    out: dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                out[key] = value.strip()
    except OSError:
        pass
    return out


def kill_pids(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def register_reaper(owner: object, kill: Callable[[], None]) -> weakref.finalize:
    """Run `kill()` when `owner` is garbage-collected or the interpreter exits.

    `kill` must be synchronous and must not reference `owner`. Call `.detach()` on the
    returned finalizer after a normal shutdown.
    """
    return weakref.finalize(owner, _quiet, kill)


def _quiet(kill: Callable[[], None]) -> None:
    try:
        kill()
    except Exception:  # noqa: BLE001 - best effort at exit
        pass
