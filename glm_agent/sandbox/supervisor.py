"""The first process of a long-lived sandbox: starts processes inside it on the host's request.

Run inside the sandbox as `python -I -c SOURCE FD` (standard library only; the source is
passed inline because the package's folder may be hidden inside). FD is one end
of a SOCK_SEQPACKET socket pair whose other end the host keeps. Each message is one JSON
object; `spawn` requests carry the new process's stdin and output descriptors (SCM_RIGHTS),
(and optionally a separate stderr), so its output flows straight to the host. Requests:

    {"id": n, "op": "spawn", "argv": [...], "cwd": "/root", "env": {...}}  + 2 or 3 fds
        -> {"id": n, "pid": pid}  (or {"id": n, "error": "..."}), later {"id": n, "exit": status}
    {"id": n, "op": "tree", "pid": pid}         -> {"id": n, "pids": [descendants of pid]}
    {"id": n, "op": "kill", "pids": [...]}      -> {"id": n, "ok": true}  (SIGKILL)

As PID 1 of the sandbox (bubblewrap --as-pid-1) it also reaps orphans, and sandboxed code
cannot kill it: the sandbox survives `kill -9 -1`. It exits when the host closes its end.
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import sys

__all__: list[str] = []


# procs.children / procs.descendants again: this file runs alone inside, without the package.
def _children(pid: int) -> list[int]:
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


def _tree(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = _children(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def _spawn(req: dict, fds: list[int]) -> int:
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.setpgid(0, 0)
            os.dup2(fds[0], 0)
            os.dup2(fds[1], 1)
            os.dup2(fds[2] if len(fds) > 2 else fds[1], 2)
            os.closerange(3, 1 << 16)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            os.chdir(req.get("cwd") or "/")
            env = req.get("env") or {}
            os.execvpe(req["argv"][0], req["argv"], env)
        except BaseException as exc:  # noqa: BLE001 - report and leave
            try:
                os.write(2, f"cannot start {req['argv'][0]}: {exc}\n".encode())
            finally:
                os._exit(127)
    return pid


def main(fd: int) -> None:
    # As a container's processes: as many open files as allowed (scripts use fds like 123321).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    sock = socket.socket(fileno=fd)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    watched: dict[int, int] = {}  # pid -> request id

    def send(msg: dict) -> None:
        try:
            sock.send(json.dumps(msg).encode())
        except OSError:
            pass

    def reap() -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            rid = watched.pop(pid, None)
            if rid is not None:
                send({"id": rid, "exit": os.waitstatus_to_exitcode(status)})

    send({"ready": True, "pid": os.getpid()})
    while True:
        try:
            ready, _, _ = select.select([sock, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in ready:
            os.read(wake_r, 4096)
            reap()
        if sock not in ready:
            continue
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 22, 4)
        except OSError:
            return
        if not data:
            return  # the host is gone
        req: dict = {}
        try:
            req = json.loads(data)
            rid = req["id"]
            if req["op"] == "spawn":
                try:
                    pid = _spawn(req, fds)
                finally:
                    for f in fds:
                        os.close(f)
                    fds = []
                watched[pid] = rid
                send({"id": rid, "pid": pid})
            elif req["op"] == "tree":
                send({"id": rid, "pids": _tree(int(req["pid"]))})
            elif req["op"] == "kill":
                for pid in req["pids"]:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass
                send({"id": rid, "ok": True})
            else:
                send({"id": rid, "error": f"unknown op {req['op']!r}"})
        except (ValueError, KeyError, TypeError, OSError) as exc:
            send({"id": req.get("id") if isinstance(req, dict) else None, "error": str(exc)})
            for f in fds:
                try:
                    os.close(f)
                except OSError:
                    pass
        reap()


if __name__ == "__main__":
    main(int(sys.argv[1]))
