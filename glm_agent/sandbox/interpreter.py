"""The host folders a Python interpreter needs, and which of them a sandbox binds back.

The sandbox hides home directories and gives code a private /tmp, so an interpreter that
lives there (pyenv under /root, a venv under $HOME or /tmp) would vanish. Its folders (venv,
base prefix, exec prefix, every sys.path folder) are bound back read-only, and nothing else:
`rebound_folders` is the one place that decides which.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from typing import Sequence

__all__ = ["interpreter_folders", "rebound_folders", "PRIVATE_DIRS"]

# Folders the sandbox replaces with its own, besides the configured hidden paths.
PRIVATE_DIRS = ("/tmp",)

_QUERY = ("import json, sys; print(json.dumps([sys.prefix, sys.base_prefix, sys.exec_prefix, "
          "getattr(sys, 'base_exec_prefix', sys.exec_prefix)] + sys.path))")


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


@functools.lru_cache(maxsize=16)
def _query(python: str, pythonpath: str) -> tuple[str, ...]:
    """Prefixes and sys.path of `python` as it starts in the sandbox: same PYTHONPATH, no user
    site (-s), not the host process's own sys.path (which holds its script's folder)."""
    env = {"PATH": "/usr/bin:/bin"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    try:
        out = subprocess.run([python, "-s", "-c", _QUERY], capture_output=True, text=True, env=env, cwd="/",
                             timeout=30, check=True).stdout
        return tuple(str(p) for p in json.loads(out))
    except (OSError, subprocess.SubprocessError, ValueError):
        return ()  # not a Python (a shell command's PATH only): its own folder is enough


def interpreter_folders(python: str) -> list[str]:
    """Every existing folder (or zip) `python` reads its code from, symlinked and resolved."""
    paths = {os.path.dirname(os.path.abspath(python)), os.path.dirname(os.path.realpath(python))}
    paths.update(p for p in _query(python, os.environ.get("PYTHONPATH", "")) if p and os.path.isabs(p))
    paths.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)
    out = {os.path.realpath(p) for p in paths} | {os.path.abspath(p) for p in paths}
    return sorted(p for p in out if os.path.exists(p))


def rebound_folders(python: str, hidden: Sequence[str]) -> list[str]:
    """The interpreter folders the sandbox binds back read-only: those under a hidden path or
    a private folder (/tmp), without the ones already inside another."""
    covered = [*hidden, *PRIVATE_DIRS]
    # A folder that is itself hidden (sys.path holding $HOME) stays hidden: binding it back
    # would undo the hiding.
    wanted = [p for p in interpreter_folders(python)
              if p not in covered and any(_under(p, h) for h in covered)]
    kept: list[str] = []
    for p in sorted(wanted):
        if not any(_under(p, k) for k in kept):
            kept.append(p)
    return kept
