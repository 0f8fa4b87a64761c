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
    "missing_requirements",
]


def lazy_factory(target: str, **kwargs: Any) -> Callable[[], Tool]:
    """`"package.module:Class"` -> a factory that imports on first use."""
    module_name, _, attr = target.partition(":")

    def factory(**overrides: Any) -> Tool:
        cls = getattr(importlib.import_module(module_name), attr)
        return cls(**{**kwargs, **overrides})

    factory.target = target  # type: ignore[attr-defined]
    return factory


# name -> (import target, one-line help, modules it needs, the extra that installs them)
BUILTIN_TOOLS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "python": ("glm_agent.tools.python:PythonTool", "sandboxed Jupyter kernel (state persists, plots saved)",
               ("jupyter_client", "ipykernel"), "python"),
    "shell": ("glm_agent.tools.shell:ShellTool", "bash in the sandboxed session workspace", (), ""),
    "browser": ("glm_agent.tools.browser:BrowserTool", "Chromium with search / mclick / open_url and citations",
                ("playwright",), "browser"),
    "image": ("glm_agent.tools.image:ImageTool", "text-to-image (diffusers pipeline or CogView API)",
              ("diffusers", "torch", "transformers"), "image"),
}

for _name, (_target, _help, _needs, _extra) in BUILTIN_TOOLS.items():
    registry.register(_name, lazy_factory(_target), help=_help)


def missing_requirements(name: str) -> str | None:
    """What to install for built-in tool `name`, or None when it is ready to load."""
    from importlib.util import find_spec

    if name not in BUILTIN_TOOLS:
        return None
    _, _, needs, extra = BUILTIN_TOOLS[name]
    missing = [m for m in needs if find_spec(m) is None]
    if not missing:
        return None
    return f"the {name} tool needs {', '.join(missing)}: pip install \"glm-agent[{extra}]\""
