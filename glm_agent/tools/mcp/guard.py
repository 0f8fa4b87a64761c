"""The launcher that keeps a stdio MCP server from outliving glm-agent.

    python -I -S guard.py PARENT_PID -- command args...

The MCP SDK starts every stdio server as the leader of a new process group (so Ctrl-C in
the terminal does not reach it) and stops it on close. If glm-agent itself is killed
(SIGKILL, a crash), nobody closes it: the server, and whatever it started, would run on.
This guard sits between the two: it is the group leader, forks the server and waits. When
its parent dies (the kernel's parent-death signal, checked against `getppid()`), it stops
the whole group: SIGTERM, a short grace, SIGKILL. When the server exits, it kills what the
server left behind in the group and exits with the server's status. SIGTERM and SIGINT are
passed on to the server.

Run as a script with `-I -S`: it imports only the standard library, so it starts fast and
does not depend on the caller's environment.
"""

from __future__ import annotations

import os
import signal
import sys
import time

__all__ = ["guarded_argv", "GUARD_PATH"]

GUARD_PATH = os.path.abspath(__file__)
_PR_SET_PDEATHSIG = 1
_GRACE = 1.5  # seconds between SIGTERM and SIGKILL when the parent is gone


def guarded_argv(argv: list[str], python: str | None = None) -> list[str]:
    """`argv` run under the guard, watching this process."""
    return [python or sys.executable, "-I", "-S", GUARD_PATH, str(os.getpid()), "--", *argv]


def _die_with_parent(sig: int) -> None:
    """Ask the kernel for `sig` when the parent exits (Linux); elsewhere the poll below does it."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError, ImportError):
        pass


def _group_members(pgid: int) -> list[int]:
    """Processes in process group `pgid`, this one excluded (read from /proc)."""
    me = os.getpid()
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # fields: state, ppid, pgrp, ...; zombies are already dead
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(entry))
    return found


def _stop_group(child: int, grace: float) -> None:
    """SIGTERM to the group (not to us: it is blocked here), then SIGKILL to what is left."""
    pgid = os.getpgrp()
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(child)
        if not _group_members(pgid):
            return
        time.sleep(0.05)
    for pid in _group_members(pgid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _reap(child: int) -> int | None:
    """The child's exit code once it has exited, else None."""
    try:
        done, status = os.waitpid(child, os.WNOHANG)
    except ChildProcessError:
        return 0
    return os.waitstatus_to_exitcode(status) if done else None


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: guard.py PARENT_PID -- command [args...]\n")
        return 2
    parent, command = int(argv[1]), argv[3:]
    _die_with_parent(signal.SIGHUP)
    watched = {signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM, signal.SIGINT}
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    if os.getppid() != parent:  # the parent died before we could watch it
        return 1
    child = os.fork()
    if child == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"cannot start {command[0]}: {exc.strerror or exc}\n".encode())
        os._exit(127)
    while True:
        info = signal.sigtimedwait(watched, 1.0)
        if os.getppid() != parent:  # orphaned: glm-agent is gone
            _stop_group(child, _GRACE)
            return 1
        if info is None:
            continue
        if info.si_signo == signal.SIGCHLD:
            code = _reap(child)
            if code is not None:
                _stop_group(child, 0.2)  # what the server left behind in its group
                return code
        elif info.si_signo in (signal.SIGTERM, signal.SIGINT):
            try:
                os.kill(child, info.si_signo)
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
