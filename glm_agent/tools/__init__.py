"""Tools: the protocol, `@tool`, and the built-ins (python, shell, browser, image).

Built-ins are registered by name with lazy factories, so listing them never imports
jupyter_client, playwright or diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from glm_agent.tools.base import (
    FunctionTool,
    Tool,
    ToolArgumentsError,
    ToolContext,
    ToolRegistry,
    registry,
    tool,
)

__all__ = [
    "Tool",
    "ToolContext",
    "FunctionTool",
    "ToolArgumentsError",
    "ToolRegistry",
    "registry",
    "tool",
    "BUILTIN_TOOLS",
    "lazy_factory",
]


def lazy_factory(target: str, **kwargs: Any) -> Callable[[], Tool]:
    """`"package.module:Class"` -> a factory that imports on first use."""
    module_name, _, attr = target.partition(":")

    def factory(**overrides: Any) -> Tool:
        cls = getattr(importlib.import_module(module_name), attr)
        return cls(**{**kwargs, **overrides})

    factory.target = target  # type: ignore[attr-defined]
    return factory


# name -> (import target, one-line help)
BUILTIN_TOOLS: dict[str, tuple[str, str]] = {
    "python": ("glm_agent.tools.python:PythonTool", "sandboxed Jupyter kernel (state persists, plots saved)"),
    "shell": ("glm_agent.tools.shell:ShellTool", "bash in the sandboxed session workspace"),
    "browser": ("glm_agent.tools.browser:BrowserTool", "Chromium with search / mclick / open_url and citations"),
    "image": ("glm_agent.tools.image:ImageTool", "text-to-image (diffusers pipeline or CogView API)"),
}

for _name, (_target, _help) in BUILTIN_TOOLS.items():
    registry.register(_name, lazy_factory(_target), help=_help)
