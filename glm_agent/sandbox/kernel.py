"""KernelSession: one sandboxed IPython kernel, driven from a private thread.

The kernel is started through a kernelspec generated per start whose argv wraps a small
ipykernel launcher in the sandbox (see bwrap.Sandbox, kernelfiles.py). What shapes this
module: ipc transport (the sandbox has no network), through files kept out of the sandbox's
reach (kernelfiles.py); `interrupt_mode: message` (a SIGINT would kill the bwrap wrapper);
JPY_PARENT_PID=1 (the parent poller cannot see across the PID namespace); IPYTHONDIR and
MPLCONFIGDIR on the private /tmp.

All jupyter_client calls happen on one daemon thread per session: the blocking client is
not thread-safe, asyncio clients are tied to one event loop (an Agent may use several:
`run_sync` twice), and bwrap's --die-with-parent fires when the *thread* that spawned it
exits, so the spawning thread must live as long as the kernel.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import signal
import subprocess
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar

from glm_agent.sandbox.bwrap import Sandbox
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.errors import KernelStartError
from glm_agent.sandbox.kernelfiles import (
    KERNEL_ARGS,
    LAUNCHER,
    KernelFiles,
    StartFiles,
    kernel_log,
    log_tail,
)
from glm_agent.sandbox.procs import descendants, read_status, register_reaper
from glm_agent.sandbox.quota import Quota, SessionQuota
from glm_agent.sandbox.text import BoundedText, strip_ansi

__all__ = ["KernelSession", "ExecutionResult", "Output"]

T = TypeVar("T")

Status = Literal["ok", "error", "timeout", "died", "cancelled", "quota"]

_KERNEL_NAME = "glm-agent-sandbox"


@dataclass
class Output:
    """One output of an execution, in the order the kernel produced them.

    kind: "stdout" | "stderr" | "result" | "display" | "error".
    `data` is the MIME bundle of results and displays (images as base64 strings).
    """

    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExecutionResult:
    status: Status
    outputs: list[Output] = field(default_factory=list)
    duration: float = 0.0
    # Set when the kernel was restarted during or after this execution: state is gone.
    restarted: bool = False
    notice: str | None = None
    dropped_chars: int = 0
    execution_count: int | None = None

    @property
    def text(self) -> str:
        """All text outputs joined, images left out."""
        parts = []
        for out in self.outputs:
            if out.text:
                parts.append(out.text)
        return "".join(parts)


class _Worker:
    """A daemon thread running submitted callables in order."""

    def __init__(self, name: str):
        self._queue: queue.Queue[tuple[Callable[[], Any], concurrent.futures.Future] | None] = queue.Queue()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, fut = item
            del item
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    fut.set_exception(exc)
                    del exc
            # Drop the job while waiting for the next one: it refers to the session, which
            # must stay collectable (its finalizer kills the kernel).
            del fn, fut

    def submit(self, fn: Callable[[], T]) -> "concurrent.futures.Future[T]":
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        if self._stopped:
            fut.set_exception(KernelStartError("this kernel session was shut down"))
        else:
            self._queue.put((fn, fut))
        return fut

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)

    @property
    def is_current(self) -> bool:
        return threading.current_thread() is self._thread


_SIGNALS = {
    signal.SIGKILL: "it was killed (SIGKILL), most likely for running out of memory or by a limit",
    signal.SIGSEGV: "it crashed with a segmentation fault",
    signal.SIGABRT: "it aborted (SIGABRT)",
    signal.SIGXCPU: "it used up its CPU-time limit",
    signal.SIGBUS: "it crashed with a bus error",
}


def _death_reason(code: int | None) -> str:
    if code is None:
        return "it stopped responding"
    sig = -code if code < 0 else (code - 128 if code > 128 else 0)
    if sig:
        try:
            return _SIGNALS.get(signal.Signals(sig), f"it was killed by signal {signal.Signals(sig).name}")
        except ValueError:
            pass
    return f"it exited with status {code}"


class KernelSession:
    """A sandboxed IPython kernel for one agent session.

    Use from async code (`await start()`, `await execute(code)`, `await shutdown()`) or from
    sync code (`start_sync`, `execute_sync`, `shutdown_sync`). Executions are serialized.
    """

    def __init__(
        self,
        workspace: str | Path,
        config: SandboxConfig | None = None,
        *,
        python: str | None = None,
        startup_code: str | None = None,
        start_timeout: float = 30.0,
        interrupt_grace: float = 2.0,
        max_capture_chars: int = 1_000_000,
    ):
        self.config = config or SandboxConfig()
        self.workspace = Path(workspace).resolve()
        self.startup_code = startup_code
        self.start_timeout = start_timeout
        self.interrupt_grace = interrupt_grace
        self.max_capture_chars = max_capture_chars
        # Host-only: never bound into the sandbox (kernelfiles.py).
        self._files = KernelFiles(isolated=not self.config.unsafe_no_sandbox)
        self._runtime = self._files.root
        try:
            self.sandbox = Sandbox(self.config, self.workspace, python=python, private_dir=self._files.sandbox_dir)
        except BaseException:
            self._files.remove()
            raise
        self.python = self.sandbox.python
        self._km: Any = None
        self._kc: Any = None
        self.kernel_pid: int | None = None
        self.restarts = 0
        self._interrupt_lock = threading.Lock()
        self._worker = _Worker(f"glm-kernel-{self._runtime.name}")
        self._closed = False
        # What the exit-time reaper needs, without a reference to self.
        self._log_fd: int | None = None
        self._reap_state: dict[str, Any] = {"pgid": None, "sandbox": self.sandbox, "files": self._files,
                                            "worker": self._worker}
        self._reaper = register_reaper(self, _make_reaper(self._reap_state))

    # -- async facade ----------------------------------------------------------------

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._worker.submit(fn))

    async def start(self) -> None:
        await self._call(self._ensure_started)

    async def execute(self, code: str, timeout: float | None = None) -> ExecutionResult:
        """Run `code`; never raises for what the code does (timeouts, crashes, OOM)."""
        cancel = threading.Event()
        fut = self._worker.submit(lambda: self._execute(code, timeout, cancel))
        try:
            return await asyncio.shield(asyncio.wrap_future(fut))
        except asyncio.CancelledError:
            # The caller gave up (Ctrl-C, agent cancelled): drop the call if it is still
            # queued, else interrupt the code and keep the kernel.
            if not fut.cancel():
                cancel.set()
            raise

    async def interrupt(self) -> None:
        """Interrupt whatever runs now (safe from any thread)."""
        self._interrupt()

    async def restart(self) -> None:
        await self._call(lambda: self._restart())

    async def shutdown(self) -> None:
        """Kill the kernel and everything it started; remove its files. Idempotent."""
        if self._closed:
            return
        self._kill_from_outside()
        await self._call(self._shutdown)
        self._worker.stop()

    # -- sync facade -----------------------------------------------------------------

    def start_sync(self) -> None:
        self._worker.submit(self._ensure_started).result()

    def execute_sync(self, code: str, timeout: float | None = None) -> ExecutionResult:
        return self._worker.submit(lambda: self._execute(code, timeout)).result()

    def restart_sync(self) -> None:
        self._worker.submit(lambda: self._restart()).result()

    def shutdown_sync(self) -> None:
        if self._closed:
            return
        self._kill_from_outside()
        self._worker.submit(self._shutdown).result()
        self._worker.stop()

    # -- state -----------------------------------------------------------------------

    @property
    def started(self) -> bool:
        return self._km is not None

    def is_alive(self) -> bool:
        proc = self._process()
        return proc is not None and proc.poll() is None

    def _process(self) -> subprocess.Popen | None:
        prov = getattr(self._km, "provisioner", None)
        return getattr(prov, "process", None)

    def pids(self) -> list[int]:
        """Host pids of every process in this kernel's sandbox (launcher first)."""
        proc = self._process()
        if proc is None or proc.poll() is not None:
            return []
        return [proc.pid] + descendants(proc.pid)

    def describe(self) -> str:
        return self.sandbox.describe()

    def _kill_from_outside(self) -> None:
        """Stop a running execution at once (from any thread): the worker sees the kernel
        die and, because we are closing, does not restart it."""
        self._closed = True
        pgid = self._reap_state.get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        self.sandbox.kill_all()

    # -- worker-thread internals -----------------------------------------------------

    def _write_kernelspec(self, start: StartFiles) -> Path:
        env = {
            "JPY_PARENT_PID": "1",
            "IPYTHONDIR": self._files.ipython_dir,
            "MPLCONFIGDIR": self._files.mpl_dir,
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
        }
        # -s: no user site-packages (HOME is the workspace without a sandbox).
        argv, self._launch_env, self._launch_cwd = self.sandbox.command(
            [self.python, "-s", "-c", LAUNCHER, "-f", start.connection_inside, *KERNEL_ARGS],
            env=env, binds=start.binds() + self._files.mpl_binds(),
        )
        spec_dir = self._runtime / "kernels" / _KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": argv,
            "display_name": "glm-agent sandbox",
            "language": "python",
            "interrupt_mode": "message",
            "metadata": {"debugger": False},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec))
        return spec_dir.parent

    def _ensure_started(self) -> None:
        if self._closed:
            raise KernelStartError("this kernel session was shut down")
        if self._km is None:
            self._start()

    def _start(self) -> None:
        from jupyter_client import KernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        start = self._files.new_start()
        kernels_dir = self._write_kernelspec(start)
        km = KernelManager(
            kernel_name=_KERNEL_NAME,
            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels_dir)]),
            transport="ipc",
            ip=start.client_ip,
            connection_file=str(start.host_connection),
        )
        km.write_connection_file()  # ports and key; start_kernel keeps them
        start.write_kernel_connection(km.get_connection_info())
        self._log_fd = kernel_log()
        try:
            km.start_kernel(env=self._launch_env, cwd=self._launch_cwd,
                            stdout=subprocess.DEVNULL, stderr=self._log_fd, stdin=subprocess.DEVNULL)
        except Exception as exc:  # noqa: BLE001
            self._close_log()
            raise KernelStartError(f"could not launch the kernel: {exc}") from exc
        self._km = km
        self._reap_state["pgid"] = km.provisioner.process.pid
        try:
            self._wait_sockets(start)
            kc = km.blocking_client()
            kc.start_channels()
            self._kc = kc
            self._wait_ready()
        except Exception as exc:  # noqa: BLE001
            tail = log_tail(self._log_fd)
            self._kill()
            raise KernelStartError(
                f"the kernel did not become ready: {exc}" + (f"\nkernel log:\n{tail}" if tail else "")
            ) from exc
        self.kernel_pid = self._find_kernel_pid()
        if self.startup_code:
            res = self._run_until_idle(self.startup_code, self.start_timeout)
            if res.status != "ok":
                raise KernelStartError(f"startup code failed: {res.text[-2000:]}")

    def _wait_sockets(self, start: StartFiles) -> None:
        """Wait until the kernel has bound its sockets and they are linked for the client."""
        deadline = time.monotonic() + self.start_timeout
        while not start.link_sockets():
            if time.monotonic() > deadline:
                raise KernelStartError(f"the kernel did not open its sockets within {self.start_timeout:g} s")
            if not self.is_alive():
                raise KernelStartError("the kernel exited during startup")
            time.sleep(0.01)

    def _close_log(self) -> None:
        fd, self._log_fd = self._log_fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _wait_ready(self) -> None:
        """kernel_info round trip, then an empty execute seen on IOPub.

        jupyter_client's wait_for_ready sleeps at least 0.2 s flushing IOPub; this polls in
        short steps instead. The empty execute also guards against zmq's slow joiner: an
        IOPub subscription that is not yet in place would lose the first outputs.
        """
        kc = self._kc
        deadline = time.monotonic() + self.start_timeout
        sent_at = 0.0
        while True:
            now = time.monotonic()
            if now > deadline:
                raise KernelStartError(f"the kernel did not answer within {self.start_timeout:g} s")
            if not self.is_alive():
                raise KernelStartError("the kernel exited during startup")
            if now - sent_at > 1.0:
                kc.kernel_info()
                sent_at = now
            try:
                msg = kc.get_shell_msg(timeout=0.02)
            except queue.Empty:
                continue
            if msg["msg_type"] == "kernel_info_reply":
                break
        while time.monotonic() < deadline:
            msg_id = kc.execute("", silent=True, store_history=False)
            end = time.monotonic() + 0.25
            while time.monotonic() < end:
                try:
                    msg = kc.get_iopub_msg(timeout=max(0.005, end - time.monotonic()))
                except queue.Empty:
                    break
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"):
                    self._drain_shell()
                    return
            if not self.is_alive():
                raise KernelStartError("the kernel exited during startup")
        raise KernelStartError("no output channel from the kernel")

    def _drain_shell(self) -> None:
        while True:
            try:
                self._kc.get_shell_msg(timeout=0)
            except queue.Empty:
                return

    def _find_kernel_pid(self) -> int | None:
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            launcher = argv[0].endswith((b"bwrap", b"sh", b"prlimit", b"setpriv"))
            if LAUNCHER.encode() in argv and not launcher:
                return pid
        return None

    def _interrupt(self) -> None:
        km = self._km
        if km is None:
            return
        with self._interrupt_lock:  # the manager's control socket is not thread-safe
            try:
                km.interrupt_kernel()
            except Exception:  # noqa: BLE001 - a dead kernel cannot be interrupted
                pass

    def _kill(self) -> None:
        kc, km = self._kc, self._km
        self._kc = self._km = None
        self.kernel_pid = None
        if kc is not None:
            try:
                kc.stop_channels()
            except Exception:  # noqa: BLE001
                pass
        if km is not None:
            try:
                km.shutdown_kernel(now=True)
            except Exception:  # noqa: BLE001
                proc = getattr(km.provisioner, "process", None) if km.provisioner else None
                if proc is not None:
                    try:
                        os.killpg(proc.pid, signal.SIGKILL)
                    except OSError:
                        pass
        self.sandbox.kill_all()
        self._reap_state["pgid"] = None
        self._close_log()
        self._files.end_start()

    def _restart(self) -> None:
        self._kill()
        if self._closed:
            raise KernelStartError("this kernel session was shut down")
        self.restarts += 1
        self._start()

    def _shutdown(self) -> None:
        self._closed = True
        self._kill()
        self.sandbox.close()
        self._files.remove()
        self._reaper.detach()

    # -- execution -------------------------------------------------------------------

    def _execute(self, code: str, timeout: float | None, cancel: threading.Event | None = None) -> ExecutionResult:
        timeout = self.config.timeout if timeout is None else timeout
        quota = self._quota()
        notice_before = None
        if self._km is not None and not self.is_alive():
            code_ = self._process().poll() if self._process() else None
            why = ("it was killed for writing past the workspace quota" if quota and quota.killed_kernel
                   else _death_reason(code_))
            notice_before = (f"The Python kernel had stopped ({why}) and was restarted "
                             "before running this code: earlier variables and imports are gone.")
            self._restart()
        else:
            self._ensure_started()
        over = quota.begin_cell() if quota is not None else None  # over quota already, or was between cells
        try:
            result = self._run_until_idle(code, timeout, cancel, quota)
        finally:
            after = quota.end_cell() if quota is not None else None
        if after:
            result.notice = (result.notice + "\n" if result.notice else "") + after
        if notice_before:
            result.restarted = True
        notice_before = " ".join(n for n in (notice_before, over) if n)
        if notice_before:
            result.notice = notice_before + (("\n" + result.notice) if result.notice else "")
        return result

    def _quota(self) -> SessionQuota | None:
        """The workspace quota guard of this session (None without a quota), made on first use."""
        guard = self.__dict__.get("_quota_guard")
        if guard is None:
            quota = Quota.from_config(self.config)
            if quota is None:
                return None
            me = weakref.ref(self)
            guard = SessionQuota(
                self.workspace, quota, where=self.sandbox.workdir,
                pids=lambda: (s.pids() if (s := me()) else []),
                kernel_pid=lambda: (s.kernel_pid if (s := me()) else None),
                interrupt=lambda: (s._interrupt() if (s := me()) else None),
                alive=lambda: (s := me()) is not None and not s._closed,
            )
            self._quota_guard = guard
        return guard

    def _run_until_idle(self, code: str, timeout: float, cancel: threading.Event | None = None,
                        quota: SessionQuota | None = None) -> ExecutionResult:
        kc = self._kc
        start = time.monotonic()
        collector = _Collector(self.max_capture_chars)
        msg_id = kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        deadline = start + timeout
        status: Status | None = None
        while status is None:
            if cancel is not None and cancel.is_set():
                status = "cancelled"
                break
            if quota is not None and quota.tripped:  # the watcher already interrupted the code
                status = "quota"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = "timeout"
                break
            try:
                msg = kc.get_iopub_msg(timeout=min(remaining, 0.05 if quota is not None else 0.2))
            except queue.Empty:
                if not self.is_alive():
                    status = "died"
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if collector.feed(msg):
                status = "error" if collector.errored else "ok"

        finished = status in ("ok", "error")
        if quota is not None and quota.tripped and status in ("ok", "error", "died"):
            status = "quota"  # it went idle (or was killed) in the moment the watcher stopped it
        result = ExecutionResult(status=status)
        if status in ("timeout", "cancelled", "quota"):
            if finished:
                self._reply(msg_id, result)
            else:
                self._interrupt()
            stopped = finished or self._wait_idle(kc, msg_id, collector, self.interrupt_grace)
            if status == "quota":
                assert quota is not None
                quota.kill_others()
                if stopped:
                    result.notice = quota.message("The code was stopped (KeyboardInterrupt) and the processes "
                                                  "it started were killed; variables defined so far are kept.")
                else:
                    self._restart_after(result, "The code filled the workspace over its quota and " + (
                        "kept writing after an interrupt (threads?), so the kernel was killed and restarted"
                        if quota.killed_kernel else "the kernel did not respond to an interrupt, so it was restarted"))
                    result.notice += " " + quota.message()
            elif stopped:
                if status == "timeout":
                    result.notice = (f"Execution timed out after {timeout:g} s and was interrupted "
                                     "(KeyboardInterrupt); variables defined so far are kept.")
                # An interrupted cell can leave runaway processes (a fork bomb still forking).
                self._health_check(result, collector)
            else:
                self._restart_after(result, f"Execution timed out after {timeout:g} s and the kernel did "
                                    "not respond to an interrupt, so it was restarted")
        elif status == "died":
            self._wait_idle(kc, msg_id, collector, 0.05)  # what it printed before dying
            proc = self._process()
            code_ = proc.poll() if proc else None
            self._restart_after(result, f"The Python kernel died ({_death_reason(code_)}) and was restarted")
        else:
            self._reply(msg_id, result)
            self._health_check(result, collector)
        collector.finish()
        result.outputs = collector.outputs
        result.dropped_chars = collector.dropped
        result.duration = time.monotonic() - start
        return result

    def _wait_idle(self, kc: Any, msg_id: str, collector: "_Collector", wait: float) -> bool:
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                msg = kc.get_iopub_msg(timeout=max(0.005, min(0.1, end - time.monotonic())))
            except queue.Empty:
                if not self.is_alive():
                    return False
                continue
            if msg["parent_header"].get("msg_id") == msg_id and collector.feed(msg):
                self._drain_shell()
                return True
        return False

    def _reply(self, msg_id: str, result: ExecutionResult) -> None:
        # The reply is sent before the idle status, so it is (almost) always waiting here.
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            try:
                msg = self._kc.get_shell_msg(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                return
            if msg["parent_header"].get("msg_id") == msg_id:
                result.execution_count = msg["content"].get("execution_count")
                return

    def _restart_after(self, result: ExecutionResult, why: str) -> None:
        result.restarted = True
        try:
            self._restart()
            result.notice = (f"{why}: all variables and imports were lost; files in "
                             f"{self.sandbox.workdir} are kept.")
        except KernelStartError as exc:
            result.notice = f"{why}, but it could not be started again: {exc}"

    def _health_check(self, result: ExecutionResult, collector: "_Collector") -> None:
        """Restart a kernel that survived but cannot work any more (memory or processes used up)."""
        cfg = self.config
        why = None
        if cfg.nprocs:
            group = self.sandbox.cgroup
            used = group.current() if group else self._task_count()
            if used >= cfg.nprocs * 0.9:
                why = (f"The sandbox reached its limit of {cfg.nprocs} processes/threads "
                       f"({used} in use, e.g. a fork bomb or runaway subprocesses)")
        if why is None and cfg.memory_mb and "MemoryError" in collector.error_names and self.kernel_pid:
            size = read_status(self.kernel_pid).get("VmSize", "0 kB").split()[0]
            used_mb = int(size) // 1024 if size.isdigit() else 0
            if used_mb >= cfg.memory_mb * 0.75:
                why = (f"The kernel ran out of memory and still holds {used_mb} of its {cfg.memory_mb} MiB "
                       "limit")
        if why:
            self._restart_after(result, why)

    def _task_count(self) -> int:
        total = 0
        for pid in self.pids()[1:]:
            threads = read_status(pid).get("Threads", "1")
            total += int(threads) if threads.isdigit() else 1
        return total


class _Collector:
    """Turns IOPub messages into ordered Outputs with a bounded amount of text."""

    def __init__(self, max_chars: int):
        self.outputs: list[Output] = []
        self.budget = max_chars
        self.overflow = BoundedText(head=0, tail=min(20_000, max(1, max_chars // 4)))
        self.errored = False
        self.error_names: list[str] = []
        self._clear_pending = False

    @property
    def dropped(self) -> int:
        return self.overflow.dropped

    def _add(self, out: Output) -> None:
        if self._clear_pending:
            self.outputs.clear()
            self._clear_pending = False
        self.outputs.append(out)

    def _stream(self, name: str, text: str) -> None:
        if self.budget <= 0 or self.overflow.total:
            self.overflow.write(text)
            return
        part, rest = text[: self.budget], text[self.budget:]
        self.budget -= len(part)
        if self.outputs and self.outputs[-1].kind == name and not self._clear_pending:
            self.outputs[-1].text += part
        else:
            self._add(Output(kind=name, text=part))
        if rest:
            self.overflow.write(rest)

    def feed(self, msg: dict[str, Any]) -> bool:
        """Take one message of our execution; True when the kernel went idle."""
        kind = msg["msg_type"]
        content = msg["content"]
        if kind == "status":
            return content.get("execution_state") == "idle"
        if kind == "stream":
            self._stream("stderr" if content.get("name") == "stderr" else "stdout", content.get("text", ""))
        elif kind in ("execute_result", "display_data", "update_display_data"):
            data = dict(content.get("data", {}))
            text = data.get("text/plain", "")
            if isinstance(text, list):
                text = "".join(text)
            self.budget -= len(text)
            self._add(Output(kind="result" if kind == "execute_result" else "display",
                             text=strip_ansi(text), data=data))
        elif kind == "error":
            self.errored = True
            self.error_names.append(content.get("ename", ""))
            tb = "\n".join(strip_ansi(line) for line in content.get("traceback", []))
            if not tb:
                tb = f"{content.get('ename', 'Error')}: {content.get('evalue', '')}"
            self._add(Output(kind="error", text=tb, data={"ename": content.get("ename"),
                                                          "evalue": content.get("evalue")}))
        elif kind == "clear_output":
            if content.get("wait"):
                self._clear_pending = True
            else:
                self.outputs.clear()
        return False

    def finish(self) -> None:
        if self.overflow.total:
            self.outputs.append(Output(kind="stdout", text=(
                f"\n[... {self.overflow.dropped:,} characters of output dropped ...]\n"
                if self.overflow.dropped else "") + self.overflow.getvalue()))


def _make_reaper(state: dict[str, Any]) -> Callable[[], None]:
    def reap() -> None:
        pgid = state.get("pgid")
        if pgid:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
        sandbox = state.get("sandbox")
        if sandbox is not None:
            sandbox.close()
        files = state.get("files")
        if files is not None:
            files.remove()
        worker = state.get("worker")
        if worker is not None:
            worker.stop()

    return reap
