"""Run one bash command inside the sandbox with a timeout and bounded output capture."""

from __future__ import annotations

import asyncio
import codecs
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from glm_agent.sandbox.bwrap import Sandbox
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.procs import descendants
from glm_agent.sandbox.quota import (
    Quota,
    QuotaWatcher,
    describe_usage,
    measure,
    quota_exceeded_message,
)
from glm_agent.sandbox.text import BoundedText

__all__ = ["CommandResult", "run_command"]


@dataclass
class CommandResult:
    exit_code: int | None
    output: str
    timed_out: bool = False
    dropped_chars: int = 0
    duration: float = 0.0
    # Set when the workspace went over its quota and the command was killed for it.
    quota_exceeded: bool = False
    # What the model should know besides the output (quota state, a restarted shell), or None.
    notice: str | None = None
    # A persistent shell session had to start a new shell after this command (session.py).
    restarted: bool = False
    # stderr, when it was asked for apart (`output` is then stdout alone).
    stderr: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.quota_exceeded


async def run_command(
    command: str,
    workspace: str | Path,
    config: SandboxConfig | None = None,
    *,
    timeout: float | None = None,
    max_capture_chars: int = 1_000_000,
    shell: str = "/bin/bash",
    stdin: str | None = None,
) -> CommandResult:
    """Run `command` with `shell -c` in a fresh sandbox on `workspace`.

    stdout and stderr are merged in order. Output beyond `max_capture_chars` keeps its head
    and tail. On timeout (or cancellation) every process of the sandbox is killed, and so it
    is when the workspace goes over its quota (`config.workspace_quota_mb`, sampled every
    ~50 ms while the command runs).
    """
    config = config or SandboxConfig()
    timeout = config.timeout if timeout is None else timeout
    # A sandbox (and pids cgroup) per command: concurrent commands cannot starve each other.
    sandbox = Sandbox(config, workspace)
    start = time.monotonic()
    buf = BoundedText(head=max_capture_chars // 2, tail=max_capture_chars - max_capture_chars // 2)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    watcher: QuotaWatcher | None = None
    try:
        argv, env, cwd = sandbox.command([shell, "-c", command])
        quota = Quota.from_config(config)
        notice = None
        if quota is not None:
            # Over quota already: the command may still run (to delete files) but not grow it.
            usage = await asyncio.to_thread(measure, sandbox.workspace)
            if quota.exceeded_by(usage):
                notice = quota_exceeded_message(usage, quota, where=sandbox.workdir, happened=(
                    "This command still ran, so that you can free space, but it is killed as soon as it "
                    "adds data."))
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, start_new_session=True,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        if quota is not None:
            watcher = QuotaWatcher(sandbox.workspace, quota.raised_to(usage),
                                   lambda _usage: _kill(proc.pid, sandbox),
                                   pids=lambda: _pids(proc.pid, sandbox)).start()

        async def pump() -> None:
            assert proc.stdout is not None
            if stdin is not None and proc.stdin is not None:
                try:
                    proc.stdin.write(stdin.encode())
                    await proc.stdin.drain()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                proc.stdin.close()
            while True:
                chunk = await proc.stdout.read(1 << 16)
                if not chunk:
                    break
                buf.write(decoder.decode(chunk))
            await proc.wait()

        timed_out = False
        try:
            await asyncio.wait_for(pump(), timeout)
        except asyncio.TimeoutError:
            timed_out = True
        finally:
            if proc.returncode is None:
                _kill(proc.pid, sandbox)
                try:
                    await asyncio.wait_for(proc.wait(), 5)
                except asyncio.TimeoutError:
                    pass
        buf.write(decoder.decode(b"", final=True))
        code = proc.returncode
        exceeded = False
        if watcher is not None:
            watcher.stop()
            killed = watcher.tripped.is_set()
            # Its last writes may have gone over after the last sample; exact numbers for the model.
            final = await asyncio.to_thread(measure, sandbox.workspace)
            exceeded = killed or watcher.over(final)
            if exceeded:
                notice = quota_exceeded_message(
                    final, quota, where=sandbox.workdir,
                    happened="The command was killed." if killed else "The command's last writes went over.")
            elif notice and not quota.exceeded_by(final):
                notice += (f" The workspace is within its quota again: {sandbox.workdir} holds "
                           f"{describe_usage(final, quota)}.")
        return CommandResult(
            exit_code=None if timed_out else code,
            output=buf.getvalue(),
            timed_out=timed_out,
            dropped_chars=buf.dropped,
            duration=time.monotonic() - start,
            quota_exceeded=exceeded,
            notice=notice,
        )
    finally:
        if watcher is not None:
            watcher.stop()
        sandbox.close()


def _pids(pid: int, sandbox: Sandbox) -> list[int]:
    """Every process of the command's sandbox (its cgroup, or its process tree)."""
    if sandbox.cgroup is not None:
        return sandbox.cgroup.pids()
    return [pid, *descendants(pid)]


def _kill(pgid: int, sandbox: Sandbox) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    sandbox.kill_all()
