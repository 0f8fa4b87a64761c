"""Real MCP servers for the tests: `mcp_server.py` run over stdio, or over streamable HTTP on
127.0.0.1 (a process started here and stopped at the end of the test)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from mcp_helpers import SERVER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def http_server():
    """start(mode) -> the URL of an HTTP test server, stopped after the test (`start.procs`
    holds the processes)."""
    procs: list[subprocess.Popen] = []

    def start(mode: str = "files") -> str:
        port = _free_port()
        proc = subprocess.Popen([sys.executable, str(SERVER), mode, "--http", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the HTTP test server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return f"http://127.0.0.1:{port}/mcp"
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the HTTP test server did not start within 30 s")

    start.procs = procs
    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
