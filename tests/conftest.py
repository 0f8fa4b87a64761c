"""Fixtures shared across test folders."""

from __future__ import annotations

import pytest
import pytest_asyncio

from glm_agent.sandbox import KernelSession, SandboxConfig


@pytest.fixture
def config() -> SandboxConfig:
    """Small limits for sandboxed kernels in tests; a folder's conftest may override it."""
    return SandboxConfig(memory_mb=1024, nprocs=64, timeout=10.0, cpu_seconds=120)


@pytest.fixture
def kernel_factory(config):
    """make(workspace, config=None, **kw) -> a KernelSession shut down at the end of the test."""
    sessions: list[KernelSession] = []

    def make(workspace, cfg: SandboxConfig | None = None, **kw) -> KernelSession:
        k = KernelSession(workspace, cfg or config, interrupt_grace=kw.pop("interrupt_grace", 1.5), **kw)
        sessions.append(k)
        return k

    yield make
    for k in sessions:
        k.shutdown_sync()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    """One Debian Chromium per test module (the browser tests and the browser attacks)."""
    from glm_agent.tools.browser import BrowserError, ChromiumProcess, find_chromium

    try:
        find_chromium()
    except BrowserError as exc:
        pytest.skip(str(exc))
    process = ChromiumProcess()
    yield process
    await process.aclose()


@pytest.fixture(scope="module")
def mariadb_server():
    """A private MariaDB server (Debian's mariadbd) for one test module; scripts/test.sh installs it."""
    from glm_agent.evals.suites.mariadb import MariaDBServer, find_mariadbd

    if find_mariadbd() is None:
        pytest.fail("mariadbd is not installed: run scripts/test.sh, or apt-get install mariadb-server")
    with MariaDBServer() as srv:
        yield srv
