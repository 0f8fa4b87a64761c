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

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # the loop
    "Agent": "glm_agent.agent.loop",
    "SessionFileError": "glm_agent.agent.loop",
    "RunResult": "glm_agent.agent.events",
    "AgentEvent": "glm_agent.agent.events",
    # messages
    "Message": "glm_agent.agent.messages",
    "SystemMessage": "glm_agent.agent.messages",
    "UserMessage": "glm_agent.agent.messages",
    "AssistantMessage": "glm_agent.agent.messages",
    "ToolMessage": "glm_agent.agent.messages",
    "ToolCall": "glm_agent.agent.messages",
    "ToolResult": "glm_agent.agent.messages",
    "Attachment": "glm_agent.agent.messages",
    # tools
    "Tool": "glm_agent.tools.base",
    "ToolContext": "glm_agent.tools.base",
    "tool": "glm_agent.tools.base",
    "registry": "glm_agent.tools.base",
    "SandboxConfig": "glm_agent.sandbox.config",
    "PythonTool": "glm_agent.tools.python",
    "ShellTool": "glm_agent.tools.shell",
    "BrowserTool": "glm_agent.tools.browser",
    "ImageTool": "glm_agent.tools.image",
    # models
    "ChatModel": "glm_agent.model.base",
    "GenerationSettings": "glm_agent.model.base",
    "ModelError": "glm_agent.model.base",
    "ContextOverflowError": "glm_agent.model.base",
    "ScriptedModel": "glm_agent.model.scripted",
    "LocalModel": "glm_agent.model.local",
    "OpenAIModel": "glm_agent.model.openai",
    "get_dialect": "glm_agent.model.dialects",
}

__all__ = [*_EXPORTS, "load_model", "__version__"]


def load_model(spec: str | None = None, **options: Any):
    """A ChatModel from a spec: "embedded", "smollm2", a path, "openai:URL#MODEL", ..."""
    from glm_agent.app_models import resolve_model

    return resolve_model(spec, **options)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'glm_agent' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
