"""Long-lived sandboxes and persistent shell sessions inside them.

`LiveSandbox` is one bubblewrap sandbox that stays up: its first process, the supervisor
(supervisor.py), starts processes inside it when asked, with their stdin and output going
straight to pipes of the host. Everything started there shares one PID namespace, /tmp and
(with `writable_root`) one copy-on-write root: a task's setup, the agent's shell and the
judge's checks see the same machine, as in a container.

`ShellSession` is one bash in a `LiveSandbox` that runs command after command, so `cd`,
variables and functions persist. Each command gets a timeout (its processes are killed and
the session goes on; a shell that does not come back is restarted), bounded output (head and
tail), its exit status, and a notice whenever the shell had to be started again.
"""

from __future__ import annotations

import asyncio
import codecs
import concurrent.futures
import fcntl
import json
import os
import re
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from glm_agent.sandbox.bwrap import Sandbox
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.errors import SandboxError
from glm_agent.sandbox.procs import descendants, kill_pids, read_status, register_reaper
from glm_agent.sandbox.quota import Quota, QuotaWatcher, describe_usage, measure, quota_exceeded_message
from glm_agent.sandbox.shell import CommandResult
from glm_agent.sandbox.text import BoundedText

__all__ = ["LiveSandbox", "ShellSession", "SandboxStartError"]

_SUPERVISOR = (Path(__file__).with_name("supervisor.py")).read_text(encoding="utf-8")
_START_TIMEOUT = 60.0


class SandboxStartError(SandboxError):
    """The long-lived sandbox did not start."""


class _Spawned:
    def __init__(self, pid: int, exited: concurrent.futures.Future):
        self.pid = pid  # as seen inside the sandbox
        self.exited = exited  # -> exit status (negative: killed by that signal), None if unknown


class LiveSandbox:
    """One sandbox for a whole session or task (see the module's docstring)."""

    def __init__(self, config: SandboxConfig | None = None, workspace: str | Path = ".", *,
                 python: str | None = None):
        self.config = config or SandboxConfig()
        self.workspace = Path(workspace).resolve()
        self.python = python
        self.sandbox: Sandbox | None = None
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._replies: dict[int, concurrent.futures.Future] = {}
        self._exits: dict[int, concurrent.futures.Future] = {}
        self._reader: threading.Thread | None = None
        self._reaper = None
        self._alive = False
        self._hello_pid: int | None = None
        self._sup_pid: int | None = None
        self.starts = 0

    # -- lifecycle -------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._alive and self._proc is not None and self._proc.poll() is None

    @property
    def workdir(self) -> str:
        return self.sandbox.workdir if self.sandbox else self.config.workspace_mount

    def start(self) -> "LiveSandbox":
        """Start the sandbox (blocking, a fraction of a second); SandboxError if it cannot."""
        if self.alive:
            return self
        self.close()
        sandbox = Sandbox(self.config, self.workspace, python=self.python)
        sandbox.as_pid_1 = True
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # Above the descriptors the launch line opens itself (3: bwrap's arguments, 4: seccomp).
        fd = fcntl.fcntl(child.fileno(), fcntl.F_DUPFD_CLOEXEC, 10)
        child.close()
        log_path = sandbox.private_dir() / "sandbox.log"
        try:
            argv, env, cwd = sandbox.command([_supervisor_python(sandbox), "-I", "-c", _SUPERVISOR, str(fd)])
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        pass_fds=(fd,), start_new_session=True)
        except BaseException:
            parent.close()
            sandbox.close()
            raise
        finally:
            os.close(fd)
        parent.settimeout(_START_TIMEOUT)
        try:
            hello = json.loads(parent.recv(1 << 16) or b"{}")
        except (OSError, ValueError):
            hello = {}
        if not hello.get("ready"):
            _kill_group(proc)
            try:
                detail = log_path.read_text(errors="replace").strip()[-1500:]
            except OSError:
                detail = ""
            parent.close()
            sandbox.close()
            raise SandboxStartError(f"the sandbox did not start{': ' + detail if detail else ''}")
        parent.settimeout(None)
        self.sandbox, self._proc, self._sock = sandbox, proc, parent
        self._hello_pid, self._sup_pid = hello.get("pid"), None
        self._alive = True
        self.starts += 1
        self._reader = threading.Thread(target=self._read_loop, args=(parent,), name="glm-sandbox", daemon=True)
        self._reader.start()
        self._reaper = register_reaper(self, _reap_action(proc, sandbox))
        return self

    def close(self) -> None:
        """Stop every process of the sandbox and remove what it left on the host."""
        self._alive = False
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._proc is not None:
            _kill_group(self._proc)
        if self.sandbox is not None:
            self.sandbox.kill_all()
            self.sandbox.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5)
        if self._sock is not None:
            self._sock.close()
        if self._reaper is not None:
            self._reaper.detach()
        self._proc = self._sock = self.sandbox = self._reader = self._reaper = None
        self._fail_all()

    # -- requests --------------------------------------------------------------------

    def _read_loop(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(1 << 22)
            except OSError:
                data = b""
            if not data:
                break
            try:
                msg = json.loads(data)
            except ValueError:
                continue
            rid = msg.get("id")
            with self._lock:
                if "exit" in msg:
                    fut = self._exits.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg["exit"])
                    continue
                fut = self._replies.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        self._alive = False
        self._fail_all()

    def _fail_all(self) -> None:
        with self._lock:
            replies, exits = list(self._replies.values()), list(self._exits.values())
            self._replies.clear()
            self._exits.clear()
        for fut in replies:
            if not fut.done():
                fut.set_exception(SandboxError("the sandbox stopped"))
        for fut in exits:
            if not fut.done():
                fut.set_result(None)

    def _request(self, msg: dict, fds: Sequence[int] = (), *, timeout: float = 30.0,
                 exited: concurrent.futures.Future | None = None) -> dict:
        """Send one request and wait for its reply; `exited` receives a spawned process's status."""
        if not self.alive or self._sock is None:
            raise SandboxError("the sandbox is not running")
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._next_id += 1
            msg = {**msg, "id": self._next_id}
            self._replies[self._next_id] = fut
            if exited is not None:
                self._exits[self._next_id] = exited
            try:
                socket.send_fds(self._sock, [json.dumps(msg).encode()], list(fds))
            except OSError as exc:
                self._replies.pop(self._next_id, None)
                raise SandboxError(f"the sandbox stopped: {exc}") from None
        try:
            reply = fut.result(timeout)
        except concurrent.futures.TimeoutError:
            raise SandboxError("the sandbox did not answer") from None
        if "error" in reply:
            raise SandboxError(f"the sandbox refused: {reply['error']}")
        return reply

    def spawn(self, argv: Sequence[str], *, stdin_fd: int, out_fd: int, cwd: str | None = None,
              env: Mapping[str, str] | None = None, err_fd: int | None = None) -> _Spawned:
        """Start `argv` inside; its stdin is `stdin_fd`, its stdout `out_fd`, its stderr
        `err_fd` (default: `out_fd` too)."""
        assert self.sandbox is not None or not self.alive
        if self.sandbox is None:
            raise SandboxError("the sandbox is not running")
        full_env = self.sandbox.env(env)
        # Registered before the request: a quick process's status may come right after the reply.
        exited: concurrent.futures.Future = concurrent.futures.Future()
        try:
            reply = self._request({"op": "spawn", "argv": list(argv), "cwd": cwd or self.workdir, "env": full_env},
                                  (stdin_fd, out_fd) if err_fd is None else (stdin_fd, out_fd, err_fd),
                                  exited=exited)
        except SandboxError:
            with self._lock:
                self._exits = {k: v for k, v in self._exits.items() if v is not exited}
            raise
        return _Spawned(reply["pid"], exited)

    def tree(self, pid: int) -> list[int]:
        """Descendants of `pid` (a pid inside the sandbox)."""
        try:
            return list(self._request({"op": "tree", "pid": pid})["pids"])
        except SandboxError:
            return []

    def kill(self, pids: Sequence[int]) -> None:
        if pids:
            try:
                self._request({"op": "kill", "pids": list(pids)})
            except SandboxError:
                pass

    def _supervisor_host_pid(self) -> int | None:
        if self._sup_pid is None and self._proc is not None:
            if self.sandbox is not None and not self.sandbox.isolated:
                self._sup_pid = self._hello_pid  # no PID namespace: the same number
            else:
                for pid in descendants(self._proc.pid):
                    nspid = read_status(pid).get("NSpid", "").split()
                    if len(nspid) > 1 and nspid[-1] == "1":
                        self._sup_pid = pid
                        break
        return self._sup_pid

    def host_pids(self) -> list[int]:
        """The sandbox's processes but the supervisor, as host pids (the quota watcher pauses
        them while it measures, and kills them past the limit)."""
        sup = self._supervisor_host_pid()
        return descendants(sup) if sup is not None else []

    def kill_processes(self) -> None:
        """Kill every process of the sandbox but the supervisor, from the host (works while
        they are paused, and whatever they do)."""
        kill_pids(self.host_pids())

    # -- one-shot programs -------------------------------------------------------------

    async def execute(self, argv: Sequence[str], *, timeout: float, stdin: str | None = None,
                      cwd: str | None = None, env: Mapping[str, str] | None = None,
                      max_capture_chars: int = 1_000_000, split_stderr: bool = False) -> CommandResult:
        """Run a program inside to its end (or `timeout`) and return its status and output
        (stdout and stderr merged, or apart with `split_stderr`). Processes it leaves in the
        background keep running."""
        start = time.monotonic()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe() if split_stderr else (None, None)
        try:
            proc = await asyncio.to_thread(self.spawn, argv, stdin_fd=in_r, out_fd=out_w, cwd=cwd, env=env,
                                           err_fd=err_w)
        except BaseException:
            for fd in (in_w, out_r, err_r):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                if fd is not None:
                    os.close(fd)
        readers = [_Reader(out_r, max_capture_chars)] + ([_Reader(err_r, max_capture_chars)] if err_r else [])
        try:
            await asyncio.to_thread(_write_all, in_w, (stdin or "").encode())
            exited = asyncio.wrap_future(proc.exited)
            deadline = start + timeout
            done = await asyncio.gather(*(r.until(exited, deadline) for r in readers))
            timed_out = not all(done)
            if timed_out:
                await asyncio.to_thread(self.kill, [proc.pid, *self.tree(proc.pid)])
            await asyncio.wait({exited}, timeout=5)  # its status follows its end of output
            for r in readers:  # what it wrote just before it ended
                await r.until(None, time.monotonic() + 0.1)
            code = None if timed_out or not exited.done() else exited.result()
            return CommandResult(exit_code=code, output=readers[0].text(), timed_out=timed_out,
                                 dropped_chars=readers[0].buf.dropped, duration=time.monotonic() - start,
                                 stderr=readers[1].text() if split_stderr else None)
        finally:
            for r in readers:
                r.close()


class _Reader:
    """Non-blocking reads of one pipe into a bounded buffer, optionally up to a marker line."""

    def __init__(self, fd: int, max_chars: int, marker: str | None = None):
        self.fd = fd
        os.set_blocking(fd, False)
        self.buf = BoundedText(head=max_chars // 2, tail=max_chars - max_chars // 2)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.marker = marker
        self.pending = ""
        self.status: int | None = None  # from the marker line
        self.eof = False

    def _feed(self, text: str) -> bool:
        """Add text; True once the marker line was seen (its status in `self.status`)."""
        if self.marker is None:
            self.buf.write(text)
            return False
        self.pending += text
        tag = "\n" + self.marker + " "
        at = self.pending.find(tag)
        if at >= 0:
            end = self.pending.find("\n", at + len(tag))
            if end >= 0:
                self.buf.write(self.pending[:at])
                try:
                    self.status = int(self.pending[at + len(tag):end])
                except ValueError:
                    self.status = None
                self.pending = ""  # output after it: a background job's, dropped
                return True
            return False
        keep = len(tag) + 24
        if len(self.pending) > keep:
            self.buf.write(self.pending[:-keep])
            self.pending = self.pending[-keep:]
        return False

    def drain(self) -> bool:
        while not self.eof:
            try:
                chunk = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            if self._feed(self.decoder.decode(chunk)):
                return True
        return False

    async def until(self, stop: asyncio.Future | None, deadline: float) -> bool:
        """Read until the marker (True), `stop` is done or end of file (True), or the deadline (False)."""
        loop = asyncio.get_running_loop()
        while True:
            if self.drain():
                return True
            if self.eof or (stop is not None and stop.done()):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            readable = loop.create_future()
            loop.add_reader(self.fd, _settle, readable)
            try:
                waits = {readable} | ({stop} if stop is not None else set())
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                loop.remove_reader(self.fd)
                if not readable.done():
                    readable.cancel()

    def text(self) -> str:
        tail = self.decoder.decode(b"", final=True)
        if self.marker is None:
            self.buf.write(tail)
        else:
            self.buf.write(self.pending + tail)
            self.pending = ""
        return self.buf.getvalue()

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class ShellSession:
    """A bash that keeps its state between commands, in a `LiveSandbox` (started on first use).

    `run()` never raises for what a command does; it returns a `CommandResult` whose `notice`
    says when the shell (or the sandbox) had to be started again and what was lost.
    """

    def __init__(self, box: LiveSandbox, *, shell: str = "/bin/bash", cwd: str | None = None,
                 env: Mapping[str, str] | None = None, max_capture_chars: int = 1_000_000):
        self.box = box
        self.shell = shell
        self.cwd = cwd
        self.env = dict(env or {})
        self.max_capture_chars = max_capture_chars
        self._proc: _Spawned | None = None
        self._in: int | None = None
        self._out: int | None = None
        self._marker = f"__glm_done_{secrets.token_hex(8)}__"
        self.restarts = 0
        self._notice: str | None = None  # for the next command
        self._turn: asyncio.Lock | None = None
        self._turn_loop: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._proc.exited.done() and self.box.alive

    async def _start(self) -> str | None:
        """Start the shell (and the sandbox when it is down); a notice when the sandbox had
        to be started again."""
        notice = None
        if not self.box.alive:
            restarted = self.box.starts > 0
            await asyncio.to_thread(self.box.start)
            if restarted:
                root = (" Everything outside the workspace, including the changes to the root file system, "
                        "is back to how it was at the start." if self.box.config.writable_root else "")
                notice = ("The sandbox had stopped and was started again: the shell is new (working directory, "
                          f"variables and functions are reset) and the processes it ran are gone.{root}")
        self._stop_shell()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self._proc = await asyncio.to_thread(
                self.box.spawn, [self.shell, "--noprofile", "--norc"], stdin_fd=in_r, out_fd=out_w,
                cwd=self.cwd, env=self.env)
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        finally:
            os.close(in_r)
            os.close(out_w)
        self._in, self._out = in_w, out_r
        return notice

    def _stop_shell(self) -> None:
        if self._proc is not None and self.box.alive:
            self.box.kill([self._proc.pid, *self.box.tree(self._proc.pid)])
        for fd in (self._in, self._out):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._proc = self._in = self._out = None

    def _line(self, command: str, stdin: bool = False) -> bytes:
        # The command travels as one ANSI-C quoted word, run by eval with stdin from /dev/null
        # (so it cannot read the lines that follow); the marker line then reports its status.
        # With `stdin` it keeps the session's input: `su - user` then reads the next lines, so
        # the commands that follow run in that user's shell, as in a terminal.
        quoted = "".join(_QUOTE.get(c, c if (" " <= c != "\x7f") else f"\\x{ord(c):02x}") for c in command)
        redirect = "" if stdin else " </dev/null"
        return (f"builtin eval $'{quoted}'{redirect}\n"
                f"builtin printf '\\n%s %d\\n' {self._marker} \"$?\"\n").encode("utf-8", "surrogateescape")

    async def run(self, command: str, *, timeout: float, stdin: bool = False) -> CommandResult:
        """Run `command` in the shell; `stdin`: let it read the session's input (see `_line`).
        Commands run one at a time, as in a terminal (concurrent calls wait their turn)."""
        loop = asyncio.get_running_loop()
        if self._turn_loop is not loop:  # an asyncio.Lock belongs to one event loop
            self._turn, self._turn_loop = asyncio.Lock(), loop
        async with self._turn:
            try:
                return await self._run(command, timeout=timeout, stdin=stdin)
            except BaseException:
                # Cancelled (or failed) mid-command: the shell's state is unknown; the next
                # command gets a new shell and is told why.
                self._stop_shell()
                self._notice = ("The previous command was interrupted before it finished, so a new shell was "
                                "started: the working directory, variables and functions are reset; files are kept.")
                raise

    async def _run(self, command: str, *, timeout: float, stdin: bool) -> CommandResult:
        start = time.monotonic()
        notices: list[str] = [self._notice] if self._notice else []
        self._notice = None
        if not self.alive:
            note = await self._start()
            if note:
                notices.append(note)
        assert self._proc is not None and self._in is not None and self._out is not None
        shell = self._proc
        before = set(await asyncio.to_thread(self.box.tree, shell.pid))
        quota, watcher, notice_quota = await self._watch(shell, before)
        reader = _Reader(os.dup(self._out), self.max_capture_chars, self._marker)
        try:
            try:
                await asyncio.to_thread(_write_all, self._in, self._line(command, stdin), close=False)
            except OSError:
                pass  # the shell is gone: seen below
            exited = asyncio.wrap_future(shell.exited)
            done = await reader.until(exited, start + timeout)
            timed_out = not done
            if timed_out:
                # Kill what the command started, again and again for a moment (a loop starts
                # new ones); the shell itself then reports back, or is restarted below.
                grace = time.monotonic() + 3
                while not done and time.monotonic() < grace:
                    new = [p for p in await asyncio.to_thread(self.box.tree, shell.pid) if p not in before]
                    await asyncio.to_thread(self.box.kill, new)
                    done = await reader.until(exited, time.monotonic() + 0.25)
            if reader.status is None and not timed_out:
                await asyncio.wait({exited}, timeout=2)  # died: its status comes separately
            output = reader.text()
            if timed_out:  # bash's report of the processes we killed says nothing new
                output = _KILLED.sub("", output)
        finally:
            reader.close()
            if watcher is not None:
                watcher.stop()
        status = reader.status
        quota_exceeded = False
        if watcher is not None and quota is not None:
            final = await asyncio.to_thread(measure, self.box.workspace)
            quota_exceeded = watcher.tripped.is_set() or watcher.over(final)
            if quota_exceeded:
                notices.append(quota_exceeded_message(
                    final, quota, where=self.box.workdir,
                    happened="The command was killed." if watcher.tripped.is_set() else
                    "The command's last writes went over."))
        if notice_quota:
            notices.insert(0, notice_quota)
            if not quota_exceeded and quota is not None:
                final = await asyncio.to_thread(measure, self.box.workspace)
                if not quota.exceeded_by(final):
                    notices.insert(1, f"The workspace is within its quota again: {self.box.workdir} holds "
                                      f"{describe_usage(final, quota)}.")
        if status is None:  # no marker: the shell died, or did not come back after the timeout
            code = shell.exited.result() if shell.exited.done() else None
            if timed_out:
                why = "The command did not stop when its processes were killed (a loop in the shell itself?)"
            elif not self.box.alive:
                why = "The sandbox stopped"
            else:
                why = f"The shell exited{f' (status {code})' if code is not None else ''}"
            self._stop_shell()
            self.restarts += 1
            try:
                note = await self._start()
            except SandboxError as exc:
                note = f"It could not be started again: {exc}"
            notices.append(f"{why}; a new shell was started in {self.cwd or self.box.workdir}: the working "
                           "directory, variables and functions are reset; files are kept.")
            if note:
                notices.append(note)
            status = code if not timed_out else None
            restarted = True
        else:
            restarted = False
        return CommandResult(
            exit_code=None if timed_out else status, output=output, timed_out=timed_out,
            dropped_chars=reader.buf.dropped, duration=time.monotonic() - start, quota_exceeded=quota_exceeded,
            notice=" ".join(notices) or None, restarted=restarted)

    async def _watch(self, shell: _Spawned, before: set[int]):
        """A quota watcher for this command: over the limit, the shell and what it started
        are killed (the session then restarts)."""
        quota = Quota.from_config(self.box.config)
        if quota is None:
            return None, None, None
        usage = await asyncio.to_thread(measure, self.box.workspace)
        notice = None
        if quota.exceeded_by(usage):
            notice = quota_exceeded_message(usage, quota, where=self.box.workdir, happened=(
                "This command still ran, so that you can free space, but it is killed as soon as it adds data."))

        def kill(_usage: object) -> None:
            # Everything but the supervisor: writers in the background too (the shell restarts).
            self.box.kill_processes()

        watcher = QuotaWatcher(self.box.workspace, quota.raised_to(usage), kill, pids=self.box.host_pids).start()
        return quota, watcher, notice

    def close(self) -> None:
        self._stop_shell()


def _settle(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


_KILLED = re.compile(r"^\S*bash: line \d+: +\d+ Killed +.*\n?", re.M)
_QUOTE = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _write_all(fd: int, data: bytes, *, close: bool = True) -> None:
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
    except OSError:
        pass
    finally:
        if close:
            os.close(fd)


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _supervisor_python(sandbox: Sandbox) -> str:
    """The system's Python when there is one (the supervisor needs only the standard library,
    and a binding of the workspace may cover the folders of the session's interpreter)."""
    system = "/usr/bin/python3"
    return system if os.path.exists(system) else sandbox.python


def _reap_action(proc: subprocess.Popen, sandbox: Sandbox):
    def kill() -> None:
        _kill_group(proc)
        sandbox.kill_all()
        sandbox.close()
    return kill
