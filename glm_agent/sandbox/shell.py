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
from glm_agent.sandbox.text import BoundedText

__all__ = ["CommandResult", "run_command"]


@dataclass
class CommandResult:
    exit_code: int | None
    output: str
    timed_out: bool = False
    dropped_chars: int = 0
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


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
    and tail. On timeout (or cancellation) every process of the sandbox is killed.
    """
    config = config or SandboxConfig()
    timeout = config.timeout if timeout is None else timeout
    # A sandbox (and pids cgroup) per command: concurrent commands cannot starve each other.
    sandbox = Sandbox(config, workspace)
    start = time.monotonic()
    buf = BoundedText(head=max_capture_chars // 2, tail=max_capture_chars - max_capture_chars // 2)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        argv, env, cwd = sandbox.command([shell, "-c", command])
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, start_new_session=True,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )

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
        return CommandResult(
            exit_code=None if timed_out else code,
            output=buf.getvalue(),
            timed_out=timed_out,
            dropped_chars=buf.dropped,
            duration=time.monotonic() - start,
        )
    finally:
        sandbox.close()


def _kill(pgid: int, sandbox: Sandbox) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
    sandbox.kill_all()
