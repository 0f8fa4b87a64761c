"""Errors of the local engine that users can meet and act on.

Shared by every loader (safetensors, GGUF, quantized checkpoints) and by the engine, so that
callers catch one type per kind of problem.
"""

from __future__ import annotations

from glm_agent.core.errors import ModelError

__all__ = ["CheckpointError", "CacheExhaustedError"]


class CheckpointError(ModelError):
    """A checkpoint cannot be loaded: missing/truncated file, unknown architecture, bad shapes."""


class CacheExhaustedError(ModelError):
    """The paged KV cache has no free block left for a new token."""
