"""The engine's errors, under one root: `EngineError`.

The engine is a standalone layer, so its errors do not derive from the runtime's
(`glm_agent.core.errors`); `glm_agent.models` turns them into `ModelError`s where it calls the
engine. Every message says what went wrong and what to do, so it can be shown as it is.
`RuntimeError` stays a base class for callers that catch that.
"""

from __future__ import annotations

__all__ = [
    "EngineError",
    "CheckpointError",
    "CacheExhaustedError",
    "ContextOverflowError",
    "QuantError",
    "EmbeddedModelError",
    "AparError",
]


class EngineError(RuntimeError):
    """The root of every error the engine raises on purpose."""


class CheckpointError(EngineError):
    """A checkpoint cannot be loaded: missing/truncated file, unknown architecture, bad shapes."""


class CacheExhaustedError(EngineError):
    """The paged KV cache has no free block left for a new token."""


class ContextOverflowError(EngineError):
    """A stream would grow past the engine's `max_context`."""


class QuantError(EngineError):
    """Bad quantization settings or tensors."""


class EmbeddedModelError(EngineError):
    """The embedded model cannot be provided (parts missing, hash mismatch, disk)."""


class AparError(EngineError):
    """APAR decoding cannot run with this model (no fork/child control tokens)."""
