"""The errors glm-agent raises on purpose, under one root.

Catch `GlmAgentError` to handle anything the runtime reports to its user; every message is
written to be shown as it is (one line that says what went wrong and what to do). The engine
and the sandbox are standalone layers with roots of their own (`EngineError`,
`SandboxError`); the layers above them turn those into these types or into observations.
"""

from __future__ import annotations

__all__ = ["GlmAgentError", "ModelError", "ContextOverflowError", "ToolArgumentsError"]


class GlmAgentError(Exception):
    """The root of the runtime's own errors."""


class ModelError(GlmAgentError, RuntimeError):
    """A model backend failed in a way the user can act on; the message says how."""


class ContextOverflowError(ModelError):
    """The conversation no longer fits the model's context window."""


class ToolArgumentsError(GlmAgentError, ValueError):
    """Arguments that do not match the tool's schema; the message is written for the model."""
