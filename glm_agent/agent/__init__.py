"""The planner loop, its messages and events, and session persistence."""

from glm_agent.agent.events import (
    AgentEvent,
    ErrorEvent,
    FinalAnswer,
    RunResult,
    RunStatus,
    StepStarted,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallStarted,
)
from glm_agent.agent.messages import (
    AssistantMessage,
    Attachment,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    ToolResult,
    UserMessage,
)

# The loop imports tools, and tools import messages from this package: load the loop lazily
# so `glm_agent.tools.base` can import `glm_agent.agent.messages` without a cycle.
_LAZY = {
    "Agent": "glm_agent.agent.loop",
    "SessionFileError": "glm_agent.agent.loop",
    "ScriptedModel": "glm_agent.model.scripted",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'glm_agent.agent' has no attribute {name!r}")

__all__ = [
    "Agent",
    "SessionFileError",
    "ScriptedModel",
    "AgentEvent",
    "ErrorEvent",
    "FinalAnswer",
    "RunResult",
    "RunStatus",
    "StepStarted",
    "TextDeltaEvent",
    "ToolCallFinished",
    "ToolCallStarted",
    "AssistantMessage",
    "Attachment",
    "Message",
    "SystemMessage",
    "ToolCall",
    "ToolMessage",
    "ToolResult",
    "UserMessage",
]
