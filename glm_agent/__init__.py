"""glm-agent: a runtime for tool-using GLM agents.

```python
from glm_agent import Agent, tool, load_model

@tool
def get_weather(city: str) -> str:
    "Current weather for a city."
    return "22°C, sunny"

agent = Agent(load_model("embedded"), tools=[get_weather])
print(agent.run_sync("What's the weather in Beijing?").output)
```

Names are loaded on first use, so `import glm_agent` stays light (no torch).
"""

from __future__ import annotations

from typing import Any

from glm_agent.core.lazy import lazy_getattr

__version__ = "0.1.0"

# Public name -> the module that defines it. Read on first use, so `import glm_agent` stays
# light: no torch, no pydantic models built, no tool imported until asked for.
_EXPORTS = {
    # the loop
    "Agent": "glm_agent.agent.loop",
    "SessionFileError": "glm_agent.agent.session",
    # messages and events
    "Message": "glm_agent.core.messages",
    "SystemMessage": "glm_agent.core.messages",
    "UserMessage": "glm_agent.core.messages",
    "AssistantMessage": "glm_agent.core.messages",
    "ToolMessage": "glm_agent.core.messages",
    "ToolCall": "glm_agent.core.messages",
    "ToolResult": "glm_agent.core.messages",
    "Attachment": "glm_agent.core.messages",
    "RunResult": "glm_agent.core.events",
    "AgentEvent": "glm_agent.core.events",
    # contracts and errors
    "ChatModel": "glm_agent.core.contracts",
    "GenerationSettings": "glm_agent.core.contracts",
    "Tool": "glm_agent.core.contracts",
    "ToolContext": "glm_agent.core.contracts",
    "GlmAgentError": "glm_agent.core.errors",
    "ModelError": "glm_agent.core.errors",
    "ContextOverflowError": "glm_agent.core.errors",
    # tools
    "tool": "glm_agent.tools.function",
    "registry": "glm_agent.tools.registry",
    "SandboxConfig": "glm_agent.sandbox.config",
    "PythonTool": "glm_agent.tools.python",
    "ShellTool": "glm_agent.tools.shell",
    "BrowserTool": "glm_agent.tools.browser",
    "ImageTool": "glm_agent.tools.image",
    "MCPServers": "glm_agent.tools.mcp.servers",
    "mcp_tools": "glm_agent.tools.mcp.servers",
    # models
    "ScriptedModel": "glm_agent.models.scripted",
    "LocalModel": "glm_agent.models.local",
    "OpenAIModel": "glm_agent.models.openai",
    "get_dialect": "glm_agent.models.dialects",
}

__all__ = [*_EXPORTS, "load_model", "__version__"]

__getattr__ = lazy_getattr(__name__, _EXPORTS)


def load_model(spec: str | None = None, **options: Any):
    """A ChatModel from a spec: "embedded", "smollm2", a path, "openai:URL#MODEL", ..."""
    from glm_agent.models.spec import resolve_model

    return resolve_model(spec, **options)


def __dir__() -> list[str]:
    return sorted(__all__)
