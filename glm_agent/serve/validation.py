"""Request validation: the bytes of a `/v1/chat/completions` body to a typed `ChatRequest`.

Every way a body can be wrong ends in `APIError` 400 naming the parameter at fault, never in a
500: the JSON itself (not UTF-8, not standard JSON, nested deeper than `MAX_JSON_DEPTH`, a lone
UTF-16 surrogate that no tokenizer can encode), then its shape (read by `openai_wire`), then
what this server does not do (`n` > 1, `logprobs`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.messages import Message
from glm_agent.models.openai_wire import (
    MAX_JSON_DEPTH,
    WireError,
    check_json_value,
    expect_type,
    function_call_from_openai,
    functions_from_openai,
    messages_from_openai,
    settings_from_openai,
    tool_choice_from_openai,
    tools_from_openai,
)
from glm_agent.serve.errors import APIError, bad_request

__all__ = ["ChatRequest", "decode_json", "parse_chat_request", "read_chat_request"]


@dataclass
class ChatRequest:
    model: str | None
    messages: list[Message]
    tools: list[ToolSpec]
    settings: GenerationSettings
    stream: bool
    include_usage: bool
    legacy: bool = False  # `functions` was used: answer with `function_call`


def _invalid_json(detail: str) -> APIError:
    return APIError(
        400,
        f"We could not parse the JSON body of your request ({detail}). The body must be one JSON object in UTF-8; "
        "check quoting and escapes, and send Content-Type: application/json.",
        code="invalid_json",
    )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(raw: bytes) -> Any:
    """The JSON in `raw`, or APIError 400: strict UTF-8 and standard JSON (no NaN, no Infinity)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _invalid_json(f"the body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _invalid_json(f"it is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise _invalid_json(str(exc)) from None
    return value


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a decoded `/v1/chat/completions` body the way OpenAI does; APIError 400 otherwise."""
    try:
        return _parse(body)
    except WireError as exc:
        raise bad_request(exc) from None


def read_chat_request(raw: bytes) -> ChatRequest:
    """`decode_json` then `parse_chat_request`: the bytes of a request body to a ChatRequest."""
    return parse_chat_request(decode_json(raw))


def _tool_choice(choice: Any, tools: list[ToolSpec]) -> str | dict:
    """What the model is told to do with the (already narrowed) tools: "auto", "none",
    "required" or {"name": ...}, which a local model enforces with its grammar."""
    if choice is None or choice == "auto":
        return "auto"
    if choice == "none":
        return "none"
    if choice == "required":
        if not tools:
            raise WireError("'tool_choice' 'required' needs at least one tool in 'tools'.", param="tool_choice")
        return "required"
    return {"name": tools[0].name}  # a named choice: the readers above kept that one tool


def _response_format(raw: Any) -> dict | None:
    """`response_format`: "text" (None), "json_object", or "json_schema" with its `schema`."""
    if raw is None:
        return None
    expect_type(raw, dict, "response_format")
    kind = raw.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        raise WireError(f"Invalid value for 'response_format.type': {kind!r}. Supported: 'text', 'json_object', "
                        "'json_schema'.", param="response_format.type")
    spec = raw.get("json_schema")
    expect_type(spec, dict, "response_format.json_schema")
    schema = spec.get("schema", {"type": "object"})
    expect_type(schema, dict, "response_format.json_schema.schema")
    return {"type": "json_schema", "json_schema": {"name": spec.get("name", "response"), "schema": schema}}


def _parse(body: Any) -> ChatRequest:
    expect_type(body, dict, "body")
    check_json_value(body)  # before anything reads it: the readers below recurse and expect text
    model = body.get("model")
    if model is not None:
        expect_type(model, str, "model")
    messages = messages_from_openai(body.get("messages"))
    legacy = body.get("tools") is None and body.get("functions") is not None
    if legacy:
        if body.get("tool_choice") is not None:
            raise WireError("'tool_choice' goes with 'tools'; with the legacy 'functions' use 'function_call'.", param="tool_choice")
        tools = function_call_from_openai(functions_from_openai(body["functions"]), body.get("function_call"))
    else:
        if body.get("functions") is not None:
            raise WireError("Give 'tools' or the legacy 'functions', not both.", param="functions")
        if body.get("function_call") is not None:
            raise WireError("'function_call' goes with the legacy 'functions'; with 'tools' use 'tool_choice'.", param="function_call")
        tools = tool_choice_from_openai(tools_from_openai(body.get("tools")), body.get("tool_choice"))
    settings = settings_from_openai(body)
    settings.tool_choice = _tool_choice(body.get("function_call") if legacy else body.get("tool_choice"), tools)
    settings.response_format = _response_format(body.get("response_format"))
    n = body.get("n")
    if n is not None and expect_type(n, int, "n") != 1:
        raise WireError("Invalid 'n': this server returns one choice per request (n=1).", param="n")
    if body.get("logprobs"):
        raise WireError("'logprobs' is not supported by this server.", param="logprobs", code="unsupported_parameter")
    stream = body.get("stream") is not None and expect_type(body["stream"], bool, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        include_usage = bool(expect_type(options, dict, "stream_options").get("include_usage"))
    return ChatRequest(model, messages, tools, settings, stream, include_usage, legacy)
