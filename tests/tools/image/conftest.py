"""Fixtures for the image tool tests: offline hub, one CPU thread, the tiny pipeline on disk."""

from __future__ import annotations

import os

# Before anything imports huggingface_hub: never touch the network from these tests.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Other test runs share the 2 cores; 2 torch threads get ~40x slower under contention."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A tiny random-weight Stable Diffusion pipeline saved with save_pretrained (built once)."""
    from glm_agent.tools.image.testing import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(autouse=True)
def _no_image_env(monkeypatch):
    """Tests choose their model and keys explicitly; the developer's environment must not leak in."""
    for name in ("GLM_AGENT_IMAGE_MODEL", "GLM_AGENT_IMAGE_BACKEND", "ZHIPUAI_API_KEY", "ZHIPU_API_KEY",
                 "ZHIPUAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
