"""Fixtures for sandbox tests: small limits and short timeouts so the suite stays quick."""

from __future__ import annotations

import pytest

from glm_agent.sandbox import KernelSession, SandboxConfig


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig(memory_mb=1024, nprocs=64, timeout=2.0, cpu_seconds=120)


@pytest.fixture
def kernel_factory(config):
    sessions: list[KernelSession] = []

    def make(workspace, cfg: SandboxConfig | None = None, **kw) -> KernelSession:
        k = KernelSession(workspace, cfg or config, interrupt_grace=kw.pop("interrupt_grace", 1.5), **kw)
        sessions.append(k)
        return k

    yield make
    for k in sessions:
        k.shutdown_sync()


@pytest.fixture
def kernel(kernel_factory, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    k = kernel_factory(ws)
    k.start_sync()
    return k
