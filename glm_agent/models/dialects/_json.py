"""Tolerant JSON reading for what real models emit as tool calls.

Models wrap JSON in ```json fences, double the braces (`{{"name": ...}}`, seen from
Qwen2.5-Coder), add trailing prose, or encode `arguments` as a JSON string. These helpers
recover the object when there is one and say precisely what is wrong when there is not.
"""

from __future__ import annotations

import json
import re
from typing import Any

from glm_agent.core.errors import GlmAgentError

__all__ = ["strip_fences", "loads_tolerant", "find_json_objects", "JSONArgumentsError"]

_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n?(.*?)\n?```\s*$", re.S)
_decoder = json.JSONDecoder()


class JSONArgumentsError(GlmAgentError, ValueError):
    """Model output that holds no JSON value; the message says what is wrong with it."""


def strip_fences(text: str) -> str:
    """Remove one surrounding ``` fence (with or without a language tag)."""
    match = _FENCE.match(text)
    return match.group(1) if match else text


def _undouble(text: str) -> str:
    # `{{"a": {{"b": 1}}}}` -> `{"a": {"b": 1}}`: template-escaped braces leaking into output.
    return text.replace("{{", "{").replace("}}", "}")


def loads_tolerant(text: str) -> Any:
    """Parse a JSON value from model output, forgiving fences, doubled braces, trailing text."""
    body = strip_fences(text.strip()).strip()
    if not body:
        raise JSONArgumentsError("empty arguments")
    last_error: Exception | None = None
    for candidate in (body, _undouble(body)):
        try:
            value, end = _decoder.raw_decode(candidate)
            return value
        except json.JSONDecodeError as exc:
            last_error = exc
        start = candidate.find("{")
        if start > 0:
            try:
                value, _ = _decoder.raw_decode(candidate[start:])
                return value
            except json.JSONDecodeError:
                pass
    raise JSONArgumentsError(f"not valid JSON: {last_error}")


def find_json_objects(text: str) -> list[tuple[int, int, Any]]:
    """Every top-level JSON object in `text` as (start, end, value), scanning left to right."""
    found: list[tuple[int, int, Any]] = []
    i = 0
    while True:
        start = text.find("{", i)
        if start < 0:
            return found
        for candidate, shrink in ((text[start:], False), (_undouble(text[start:]), True)):
            try:
                value, length = _decoder.raw_decode(candidate)
            except json.JSONDecodeError:
                continue
            if shrink:  # map the length back onto the original (doubled) text
                length = _doubled_length(text[start:], length)
            found.append((start, start + length, value))
            i = start + length
            break
        else:
            i = start + 1


def _doubled_length(original: str, undoubled_length: int) -> int:
    """Length in `original` that covers the first `undoubled_length` chars after undoubling."""
    count = 0
    i = 0
    while i < len(original) and count < undoubled_length:
        if original.startswith("{{", i) or original.startswith("}}", i):
            i += 2
        else:
            i += 1
        count += 1
    return i
