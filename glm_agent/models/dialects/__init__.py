"""Dialects: how a model family spells conversations, tool specs and tool calls as text."""

from __future__ import annotations

from glm_agent.models.dialects.base import Dialect, ParsedEvent, StreamParser, parse_all
from glm_agent.models.dialects.glm4 import GLM4Dialect
from glm_agent.models.dialects.glm4_0414 import GLM4_0414Dialect
from glm_agent.models.dialects.hermes import HermesDialect

__all__ = [
    "Dialect",
    "StreamParser",
    "ParsedEvent",
    "parse_all",
    "GLM4Dialect",
    "GLM4_0414Dialect",
    "HermesDialect",
    "get_dialect",
    "DIALECTS",
]

DIALECTS: dict[str, type[Dialect]] = {
    "glm4": GLM4Dialect,
    "glm4_0414": GLM4_0414Dialect,
    "hermes": HermesDialect,
}


def get_dialect(name: str) -> Dialect:
    try:
        return DIALECTS[name]()
    except KeyError:
        raise ValueError(f"unknown dialect {name!r}; choose one of {', '.join(DIALECTS)}") from None
