"""Fixtures for sandbox tests: small limits and short timeouts so the suite stays quick."""

from __future__ import annotations

import pytest

from glm_agent.sandbox import SandboxConfig


@pytest.fixture
def config() -> SandboxConfig:
    return SandboxConfig(memory_mb=1024, nprocs=64, timeout=2.0, cpu_seconds=120)


@pytest.fixture
def kernel(kernel_factory, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    k = kernel_factory(ws)
    k.start_sync()
    return k
