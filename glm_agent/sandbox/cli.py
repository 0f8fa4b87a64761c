"""`glm-agent sandbox ...`: check what isolation this machine gives, run a command in it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import List, Optional

import typer

__all__ = ["app"]

app = typer.Typer(
    name="sandbox",
    help="Sandboxed execution (bubblewrap + resource limits) used by the python and shell tools.",
    no_args_is_help=True,
    add_completion=False,
)

_PROBE = """
import os, socket, resource
checks = {}
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1); checks["network blocked"] = False
except OSError:
    checks["network blocked"] = True
try:
    open("/usr/.glm-agent-probe", "w"); checks["root read-only"] = False
except OSError:
    checks["root read-only"] = True
checks["workspace writable"] = bool(open("probe.txt", "w").write("ok"))
checks["own PID namespace"] = os.getpid() < 10
checks["memory limit (MiB)"] = resource.getrlimit(resource.RLIMIT_AS)[0] // 2**20
print(checks)
"""


@app.command("check")
def check(
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Check the limits-only mode."),
    memory_mb: int = typer.Option(4096, "--memory-mb", help="Address-space limit to test with."),
) -> None:
    """Start a sandboxed kernel, probe its isolation and print what holds."""
    import tempfile

    from glm_agent.sandbox import KernelSession, SandboxConfig, SandboxError

    config = SandboxConfig(memory_mb=memory_mb, unsafe_no_sandbox=unsafe_no_sandbox, timeout=20)
    with tempfile.TemporaryDirectory(prefix="glm-check-") as ws:
        try:
            kernel = KernelSession(ws, config)
            typer.echo(kernel.describe())
            t0 = time.perf_counter()
            kernel.start_sync()
            started = time.perf_counter() - t0
            res = kernel.execute_sync(_PROBE)
        except SandboxError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        finally:
            try:
                kernel.shutdown_sync()
            except Exception:  # noqa: BLE001
                pass
    typer.echo(f"kernel started in {started:.2f} s")
    typer.echo(res.text.strip() if res.status == "ok" else f"probe failed: {res.text}")
    if res.status != "ok":
        raise typer.Exit(1)


@app.command("run")
def run(
    command: List[str] = typer.Argument(..., help="Command and arguments (put `--` before options)."),
    workspace: Path = typer.Option(Path("."), "--workspace", "-w", help="Folder bound at /mnt/data."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds before the command is killed."),
    network: bool = typer.Option(False, "--network", help="Keep the host network."),
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Resource limits only."),
    memory_mb: Optional[int] = typer.Option(4096, "--memory-mb", help="Address-space limit."),
) -> None:
    """Run one command in the sandbox, as the shell tool would, and print its output."""
    import shlex

    from glm_agent.sandbox import SandboxConfig, SandboxError, run_command

    config = SandboxConfig(memory_mb=memory_mb, network=network, unsafe_no_sandbox=unsafe_no_sandbox,
                           timeout=timeout)
    try:
        res = asyncio.run(run_command(shlex.join(command), workspace, config))
    except SandboxError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(res.output, nl=False)
    if res.timed_out:
        typer.echo(f"[timed out after {timeout:g} s]", err=True)
        raise typer.Exit(124)
    raise typer.Exit(res.exit_code or 0)
