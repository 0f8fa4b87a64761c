"""The named tools `--tools python,browser` picks from: built-ins and their requirements.

Entries are factories, not instances, because tools such as `python` hold per-session state:
every agent gets fresh instances. Built-ins are named by `"module:Class"` and imported on
first use, so listing them never imports jupyter_client, playwright or diffusers.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from glm_agent.core.contracts import Tool
from glm_agent.core.lazy import import_object

__all__ = ["ToolRegistry", "registry", "BUILTIN_TOOLS", "lazy_factory", "missing_requirements"]


class ToolRegistry:
    """Named tool factories shared by the agent and the CLI (`--tools python,browser`).

    Factories, not instances, because tools such as `python` hold per-session state: every
    agent gets fresh instances.
    """

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], Tool]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, factory: Callable[[], Tool], help: str = "") -> None:
        self._factories[name] = factory
        self._help[name] = help

    def names(self) -> list[str]:
        return sorted(self._factories)

    def describe(self) -> dict[str, str]:
        return {n: self._help[n] for n in self.names()}

    def create_with(self, name: str, **options: Any) -> Tool:
        """One fresh instance of tool `name`, with constructor options."""
        if name not in self._factories:
            known = ", ".join(self.names()) or "none"
            raise KeyError(f"unknown tool {name!r}; available tools: {known}")
        factory = self._factories[name]
        return factory(**options) if options else factory()

    def create(self, names: Iterable[str]) -> list[Tool]:
        tools = []
        for name in names:
            name = name.strip()
            if not name:
                continue
            if name not in self._factories:
                known = ", ".join(self.names()) or "none"
                raise KeyError(f"unknown tool {name!r}; available tools: {known}")
            tools.append(self._factories[name]())
        return tools


registry = ToolRegistry()


def lazy_factory(target: str, **kwargs: Any) -> Callable[[], Tool]:
    """`"package.module:Class"` -> a factory that imports on first use."""

    def factory(**overrides: Any) -> Tool:
        return import_object(target)(**{**kwargs, **overrides})

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
