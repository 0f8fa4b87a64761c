"""Run a test script as uid 65534 (the host side of glm-agent as an ordinary user).

The script gets a fresh workspace owned by nobody as `sys.argv[1]` and imports a copy of the
package that nobody can read: the checkout may sit in root's own 0700 home.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

__all__ = ["run_as_nobody"]


def run_as_nobody(script: str, prefix: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python3 -c script WORKSPACE` as uid 65534; skips where this machine cannot switch to it."""
    import glm_agent

    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if os.geteuid() != 0 or not setpriv or not os.access(python, os.X_OK):
        pytest.skip("needs root, setpriv and /usr/bin/python3 to run as nobody")
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    try:
        root.chmod(0o755)
        ws = root / "ws"
        ws.mkdir()
        os.chown(ws, 65534, 65534)
        shutil.copytree(Path(glm_agent.__file__).parent, root / "src" / "glm_agent",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for folder, _, _ in os.walk(root / "src"):
            os.chmod(folder, 0o755)
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(root / "src")}
        return subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c", script,
                               str(ws)], capture_output=True, text=True, env=env, timeout=timeout)
    finally:
        shutil.rmtree(root, ignore_errors=True)
