"""Tools: `@tool` for your own functions, the registry, and the built-ins (python, shell,
browser, image). The contract itself (`Tool`, `ToolContext`) lives in `glm_agent.core`.
"""

from __future__ import annotations

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.errors import ToolArgumentsError
from glm_agent.tools.function import FunctionTool, tool
from glm_agent.tools.registry import BUILTIN_TOOLS, ToolRegistry, lazy_factory, missing_requirements, registry

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
