"""`glm-agent sandbox ...`: check what isolation this machine gives, run a command in it."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import List, Optional

import typer

from glm_agent.cli.errors import command_group

__all__ = ["app"]

app = command_group(
    name="sandbox",
    help="Sandboxed execution (bubblewrap + resource limits) used by the python and shell tools.",
    no_args_is_help=True,
)


@app.command("check")
def check(
    unsafe_no_sandbox: bool = typer.Option(False, "--unsafe-no-sandbox", help="Check the limits-only mode."),
    memory_mb: int = typer.Option(4096, "--memory-mb", help="Address-space limit to test with."),
) -> None:
    """Start a sandboxed kernel, probe its isolation from inside and print what holds."""
    import json
    import tempfile

    from glm_agent.sandbox import KernelSession, SandboxConfig, run_command
    from glm_agent.sandbox.limits import pids_cgroup_root
    from glm_agent.sandbox.probe import check_rows, format_table, probe_code

    config = SandboxConfig(memory_mb=memory_mb, unsafe_no_sandbox=unsafe_no_sandbox, timeout=20)
    kernel = None
    with tempfile.TemporaryDirectory(prefix="glm-check-") as ws:
        try:
            kernel = KernelSession(ws, config)
            box = kernel.sandbox
            typer.echo(kernel.describe())
            t0 = time.perf_counter()
            kernel.start_sync()
            started = time.perf_counter() - t0
            res = kernel.execute_sync(probe_code(box.hidden_paths(), box.isolated))
            shell = asyncio.run(run_command("grep CapEff /proc/self/status", ws, config))
        finally:
            if kernel is not None:
                try:
                    kernel.shutdown_sync()
                except Exception:  # noqa: BLE001
                    pass
    typer.echo(f"kernel started in {started:.2f} s\n")
    try:
        facts = json.loads(res.text.strip().splitlines()[-1]) if res.status == "ok" else None
    except (ValueError, IndexError):
        facts = None
    if facts is None:
        typer.echo(f"probe failed: {res.text.strip() or res.status}", err=True)
        raise typer.Exit(1)
    if not config.nprocs:
        how = "none"
    elif os.geteuid() != 0:
        how = "rlimit"
    else:
        how = "pids cgroup" if pids_cgroup_root() is not None else "NOT enforced: no writable pids cgroup"
    shell_cap = shell.output.split(":", 1)[1].strip() if shell.ok and ":" in shell.output else None
    rows = check_rows(facts, config, isolated=box.isolated, nprocs_how=how, rebound=box.rebound_folders(),
                      shell_cap=shell_cap)
    typer.echo(format_table(rows))
    failed = [what for what, _, verdict in rows if verdict == "FAIL"]
    if failed:
        typer.echo(f"\nisolation does NOT hold: {', '.join(failed)}", err=True)
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

    from glm_agent.sandbox import SandboxConfig, run_command

    config = SandboxConfig(memory_mb=memory_mb, network=network, unsafe_no_sandbox=unsafe_no_sandbox,
                           timeout=timeout)
    res = asyncio.run(run_command(shlex.join(command), workspace, config))
    typer.echo(res.output, nl=False)
    if res.timed_out:
        typer.echo(f"[timed out after {timeout:g} s]", err=True)
        raise typer.Exit(124)
    raise typer.Exit(res.exit_code or 0)
