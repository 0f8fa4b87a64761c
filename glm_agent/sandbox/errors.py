"""Errors users of the sandbox can meet, with messages that say what to do."""

from __future__ import annotations

__all__ = ["SandboxError", "SandboxUnavailableError", "KernelStartError"]


class SandboxError(RuntimeError):
    """Base class for sandbox failures."""


class SandboxUnavailableError(SandboxError):
    """bubblewrap is missing or cannot create namespaces here."""

    def __init__(self, reason: str):
        super().__init__(
            f"cannot sandbox code: {reason}. Install bubblewrap (`apt-get install bubblewrap`), "
            "or opt in to running code with resource limits only (`--unsafe-no-sandbox`, "
            "SandboxConfig(unsafe_no_sandbox=True)); sandboxed code can then read and write "
            "everything your user can."
        )
        self.reason = reason


class KernelStartError(SandboxError):
    """The Jupyter kernel did not start or did not answer."""
