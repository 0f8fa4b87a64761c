"""The agent: the planner loop (`loop`) and session files (`session`).

It is written against `glm_agent.core` only: any `ChatModel`, any `Tool`.
"""

from glm_agent.agent.loop import Agent
from glm_agent.agent.session import SessionFileError, default_home

__all__ = ["Agent", "SessionFileError", "default_home"]
