"""The one lazy-import helper: `"package.module:attribute"` strings resolved on first use.

Registries (built-in tools, eval suites, CLI groups, the package's public names) name their
entries this way, so listing them never imports torch, jupyter_client, playwright or
diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["import_object", "lazy_getattr"]


def import_object(target: str) -> Any:
    """`"package.module:attribute"` -> the attribute (`"package.module"` -> the module)."""
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split(".") if attr else ():
        obj = getattr(obj, part)
    return obj


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` that imports `exports[name]` (a module path; the
    attribute is `name`) when `name` is first read."""

    def __getattr__(name: str) -> Any:
        if name in exports:
            return import_object(f"{exports[name]}:{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
