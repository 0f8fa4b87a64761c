"""Helpers for the MCP tests: where the test server is, and whether processes still run."""

from __future__ import annotations

import sys
import time
from pathlib import Path

SERVER = Path(__file__).with_name("mcp_server.py")


def stdio(mode: str = "files") -> list[str]:
    """The argv of a stdio test server."""
    return [sys.executable, str(SERVER), mode]


def alive(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return False


def wait_gone(*pids: int, timeout: float = 10.0) -> list[int]:
    """The pids still alive after `timeout` seconds (none, when all ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, their children ...), read from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
