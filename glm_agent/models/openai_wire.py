"""The OpenAI chat-completions wire format, both directions, written once.

`glm_agent.core` objects (messages, tool specs, tool calls, settings, model events) to and from
the JSON of `/chat/completions`: request messages, tools and tool choice, `tool_calls`, streamed
deltas, usage, finish reasons, error bodies, and the server-sent-event framing of streams. The
client (`OpenAIModel`) writes requests and reads answers; the server (`glm_agent.serve`) reads
requests and writes answers.

Readers of requests are strict: a body that is not the documented shape raises `WireError`,
which names the parameter at fault (`messages[2].tool_calls[0].function.name`) so the server can
answer 400 with it. Readers of answers are lenient: servers differ (arguments sent as objects,
calls without an index, usage on the last choice chunk, Zhipu's extra finish reasons).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, AsyncIterator, Sequence

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.errors import GlmAgentError
from glm_agent.core.events import ModelDone
from glm_agent.core.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    new_call_id,
)

__all__ = [
    "WireError",
    "expect_type",
    "check_json_value",
    "MAX_JSON_DEPTH",
    "CONTEXT_LENGTH_EXCEEDED",
    # messages
    "messages_to_openai",
    "messages_from_openai",
    # tool calls
    "tool_call_to_openai",
    "tool_call_from_openai",
    "ToolCallAccumulator",
    # tools
    "tools_to_openai",
    "tools_from_openai",
    "functions_from_openai",
    "tool_choice_from_openai",
    "function_call_from_openai",
    # settings
    "settings_to_openai",
    "settings_from_openai",
    # answers
    "AnswerWriter",
    "ChunkParts",
    "read_chunk",
    "done_from_openai",
    "usage_to_openai",
    "finish_reason_to_openai",
    # errors and framing
    "error_to_openai",
    "error_from_openai",
    "sse_event",
    "SSE_DONE",
    "iter_sse",
]

CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"  # OpenAI's code for a conversation too long
SEED_RANGE = (-(2**63), 2**64)  # what torch generators (and OpenAI's int64 seeds) take
# Far deeper than any real request (tool schemas included); keeps every recursive reader of a
# request (templates, json.dumps, pydantic) well inside Python's recursion limit.
MAX_JSON_DEPTH = 64
_SURROGATE = re.compile("[\ud800-\udfff]")


class WireError(GlmAgentError, ValueError):
    """A request body that is not OpenAI's chat-completions shape; `param` says where."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


# ---------------------------------------------------------------- type checks

_WANTED = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "an object"}
_NAMES = {str: "string", int: "integer", float: "number", list: "array", dict: "object"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return _NAMES.get(type(value), type(value).__name__)


def expect_type(value: Any, kinds: type | tuple[type, ...], param: str) -> Any:
    """`value` if it is one of the JSON `kinds` (an int counts as a number, a bool as nothing else)."""
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool))
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        wanted = " or ".join(_WANTED[k] for k in kinds)
        raise WireError(
            f"Invalid type for '{param}': expected {wanted}, but got {_type_name(value)} instead.",
            param=param, code="invalid_type",
        )
    return value


def _path(root: str, where: tuple | None) -> str:
    keys: list[Any] = []
    while where is not None:
        where, key = where
        keys.append(key)
    text = "" if root == "body" else root
    for key in reversed(keys):
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text or root


def check_json_value(value: Any, param: str = "body", max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise WireError if `value` nests deeper than `max_depth` or holds a lone UTF-16 surrogate
    (an unpaired \\ud800-\\udfff escape decodes to one: it is no text, and no tokenizer or UTF-8
    encoder takes it). Iterative: the value may be anything a client sent."""
    stack: list[tuple[Any, int, tuple | None]] = [(value, 1, None)]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, str):
            if _SURROGATE.search(node):
                at = _path(param, where)
                raise WireError(
                    f"Invalid '{at}': the string holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape), "
                    "which is not text. Send valid Unicode.",
                    param=at,
                )
            continue
        if depth > max_depth:
            at = _path(param, where)
            raise WireError(f"Invalid '{at}': JSON nested more than {max_depth} levels deep.", param=at)
        if isinstance(node, dict):
            for key, item in node.items():
                if _SURROGATE.search(key):
                    at = _path(param, where)
                    raise WireError(f"Invalid '{at}': a key holds a lone UTF-16 surrogate, which is not text.", param=at)
                if isinstance(item, (str, dict, list)):
                    stack.append((item, depth + 1, (where, key)))
        elif isinstance(node, list):
            stack.extend((item, depth + 1, (where, i)) for i, item in enumerate(node) if isinstance(item, (str, dict, list)))


def _missing(param: str) -> WireError:
    return WireError(f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _name(value: Any, param: str) -> str:
    name = expect_type(value, str, param)
    if not name:
        raise WireError(f"Invalid '{param}': empty string. Give the function's name.", param=param)
    return name


# ---------------------------------------------------------------- messages


def _arguments_text(call: ToolCall) -> str:
    # A call whose arguments did not parse goes back verbatim: its reader should see what was written.
    if call.arguments_error and call.raw_arguments is not None:
        return call.raw_arguments
    return json.dumps(call.arguments, ensure_ascii=False)


def messages_to_openai(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as OpenAI chat messages (assistant `tool_calls`, `tool` role with its call id)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, (SystemMessage, UserMessage)):
            out.append({"role": message.role, "content": message.content})
        elif isinstance(message, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                item["tool_calls"] = [tool_call_to_openai(c) for c in message.tool_calls]
            elif item["content"] is None:
                item["content"] = ""
            out.append(item)
        elif isinstance(message, ToolMessage):
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content})
        else:  # pragma: no cover - the Message union is closed
            raise TypeError(f"cannot send a {type(message).__name__} to an OpenAI endpoint")
    return out


def _content(content: Any, param: str) -> str:
    """A message's content: a string, or an array of text parts."""
    if content is None:
        return ""
    expect_type(content, (str, list), param)
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        expect_type(part, dict, f"{param}[{i}]")
        kind = part.get("type")
        if kind != "text":
            raise WireError(
                f"Invalid value for '{param}[{i}].type': only 'text' content parts are supported by this model, "
                f"not {kind!r}.",
                param=f"{param}[{i}].type",
            )
        parts.append(expect_type(part.get("text"), str, f"{param}[{i}].text"))
    return "".join(parts)


def _history_call(raw: Any, param: str, call_id: Any = None) -> ToolCall:
    """One call of an assistant turn in a request: `tool_calls[i]`, or the legacy `function_call`."""
    function = expect_type(raw, dict, param)
    name = _name(function.get("name"), f"{param}.name")
    arguments = function.get("arguments")
    if arguments is not None:
        expect_type(arguments, (str, dict), f"{param}.arguments")
    if call_id is not None:
        expect_type(call_id, str, param.rpartition(".")[0] + ".id")
    call = tool_call_from_openai(name, arguments, call_id or None)
    if isinstance(arguments, str):  # the text decoded to values the body check never saw
        check_json_value(call.arguments, f"{param}.arguments")
    return call


def messages_from_openai(raw: Any, param: str = "messages") -> list[Message]:
    """A request's `messages` as ours (strict: a WireError names the first thing wrong)."""
    if raw is None:
        raise _missing(param)
    expect_type(raw, list, param)
    if not raw:
        raise WireError(
            f"Invalid '{param}': empty array. Expected an array with minimum length 1.", param=param, code="empty_array"
        )
    out: list[Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool messages without a name
    for i, item in enumerate(raw):
        p = f"{param}[{i}]"
        expect_type(item, dict, p)
        role = item.get("role")
        if role is None:
            raise _missing(f"{p}.role")
        expect_type(role, str, f"{p}.role")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_content(item.get("content"), f"{p}.content")))
        elif role == "user":
            out.append(UserMessage(content=_content(item.get("content"), f"{p}.content")))
        elif role == "assistant":
            calls: list[ToolCall] = []
            raw_calls = item.get("tool_calls") or []
            expect_type(raw_calls, list, f"{p}.tool_calls")
            for j, call in enumerate(raw_calls):
                q = f"{p}.tool_calls[{j}]"
                expect_type(call, dict, q)
                if call.get("type", "function") != "function":
                    raise WireError(f"Invalid value for '{q}.type': only 'function' calls are supported.", param=f"{q}.type")
                calls.append(_history_call(call.get("function"), f"{q}.function", call.get("id")))
            if item.get("function_call") is not None and not calls:  # the legacy single call
                calls.append(_history_call(item["function_call"], f"{p}.function_call"))
            names.update((c.id, c.name) for c in calls)
            out.append(AssistantMessage(content=_content(item.get("content"), f"{p}.content"), tool_calls=calls))
        elif role in ("tool", "function"):
            call_id = item.get("tool_call_id")
            name = item.get("name")
            if name is not None:
                expect_type(name, str, f"{p}.name")
            if role == "tool" and call_id is None:
                raise _missing(f"{p}.tool_call_id")
            if call_id is None:  # legacy `function` role: it answers the last call of that name
                call_id = next((cid for cid, n in reversed(names.items()) if n == name), new_call_id())
            expect_type(call_id, str, f"{p}.tool_call_id")
            name = name or names.get(call_id, "tool")
            out.append(ToolMessage(tool_call_id=call_id, name=name, content=_content(item.get("content"), f"{p}.content")))
        else:
            raise WireError(
                f"Invalid value: {role!r}. Supported values are: 'system', 'developer', 'user', 'assistant', "
                "'tool' and 'function'.",
                param=f"{p}.role",
            )
    return out


# ---------------------------------------------------------------- tool calls


def tool_call_to_openai(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": _arguments_text(call)}}


def tool_call_from_openai(name: str, arguments: Any, call_id: str | None = None) -> ToolCall:
    """A ToolCall from `function.name` / `function.arguments` (a JSON string, or an object).

    Arguments that do not parse are kept (`raw_arguments`) with `arguments_error` set: the
    model wrote them, and the agent loop tells it what was wrong.
    """
    call_id = call_id or new_call_id()
    if isinstance(arguments, dict):  # some servers (Ollama, Zhipu at times) send an object
        return ToolCall(id=call_id, name=name, arguments=arguments, raw_arguments=json.dumps(arguments, ensure_ascii=False))
    text = "" if arguments is None else str(arguments)
    if not text.strip():
        return ToolCall(id=call_id, name=name, arguments={}, raw_arguments=text)
    try:
        value = json.loads(text)
        if isinstance(value, str):  # double-encoded
            value = json.loads(value)
    except (json.JSONDecodeError, RecursionError) as exc:
        return ToolCall(id=call_id, name=name, raw_arguments=text, arguments_error=f"arguments are not valid JSON: {exc}")
    if not isinstance(value, dict):
        return ToolCall(
            id=call_id, name=name, raw_arguments=text, arguments_error=f"expected a JSON object, got {type(value).__name__}"
        )
    return ToolCall(id=call_id, name=name, arguments=value, raw_arguments=text)


class ToolCallAccumulator:
    """Streamed `tool_calls` deltas, keyed by `index`: the id and name come first, arguments in pieces."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for delta in deltas:
            if not isinstance(delta, dict):
                continue
            index = delta.get("index")
            if not isinstance(index, int):
                # No index (some servers): a new id starts a call, a known id or none continues one.
                ids = {c["id"]: i for i, c in self.calls.items()}
                if delta.get("id") in ids:
                    index = ids[delta["id"]]
                elif delta.get("id") or not self.calls:
                    index = len(self.calls)
                else:
                    index = max(self.calls)
            slot = self.calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
            if delta.get("id"):
                slot["id"] = delta["id"]
            function = delta.get("function") or {}
            if function.get("name"):
                # Names arrive whole; a server repeating it in later chunks must not double it.
                if not slot["name"].endswith(function["name"]):
                    slot["name"] += function["name"]
            arguments = function.get("arguments")
            if isinstance(arguments, dict):
                slot["arguments"] = arguments
            elif arguments:
                slot["arguments"] += arguments

    def finish(self) -> list[ToolCall]:
        return [
            tool_call_from_openai(c["name"], c["arguments"], c["id"])
            for _, c in sorted(self.calls.items())
            if c["name"]
        ]


# ---------------------------------------------------------------- tools and tool choice


def tools_to_openai(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    return [tool.openai_schema() for tool in tools]


def _function_spec(function: Any, param: str) -> ToolSpec:
    expect_type(function, dict, param)
    name = _name(function.get("name"), f"{param}.name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    expect_type(parameters, dict, f"{param}.parameters")
    description = function.get("description")
    description = "" if description is None else expect_type(description, str, f"{param}.description")
    return ToolSpec(name=name, description=description, parameters=parameters)


def tools_from_openai(raw: Any, param: str = "tools") -> list[ToolSpec]:
    """A request's `tools` (function tools only)."""
    if raw is None:
        return []
    specs = []
    for i, item in enumerate(expect_type(raw, list, param)):
        p = f"{param}[{i}]"
        expect_type(item, dict, p)
        if item.get("type", "function") != "function":
            raise WireError(f"Invalid value for '{p}.type': only 'function' tools are supported.", param=f"{p}.type")
        specs.append(_function_spec(item.get("function"), f"{p}.function"))
    return specs


def functions_from_openai(raw: Any, param: str = "functions") -> list[ToolSpec]:
    """The legacy `functions` parameter: an array of bare function objects."""
    if raw is None:
        return []
    return [_function_spec(f, f"{param}[{i}]") for i, f in enumerate(expect_type(raw, list, param))]


def _chosen(specs: list[ToolSpec], name: Any, param: str, listed: str) -> list[ToolSpec]:
    name = _name(name, param)
    chosen = [s for s in specs if s.name == name]
    if not chosen:
        raise WireError(f"Invalid value for '{param}': no function named {name!r} in '{listed}'.", param=param)
    return chosen


def tool_choice_from_openai(specs: list[ToolSpec], choice: Any, param: str = "tool_choice") -> list[ToolSpec]:
    """The tools a model may call under `tool_choice`: `"none"` drops them, a named function
    keeps that one. `"required"` cannot be forced on a free-running model; it acts as `"auto"`."""
    if choice is None or choice in ("auto", "required"):
        return specs
    if choice == "none":
        return []
    expect_type(choice, (str, dict), param)
    if isinstance(choice, str):
        raise WireError(
            f"Invalid value for '{param}': {choice!r}. Supported: 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": "..."}}.',
            param=param,
        )
    kind = choice.get("type", "function")
    if kind != "function":
        raise WireError(f"Invalid value for '{param}.type': {kind!r}. Only 'function' is supported.", param=f"{param}.type")
    function = choice.get("function")
    if function is None:
        raise _missing(f"{param}.function")
    expect_type(function, dict, f"{param}.function")
    return _chosen(specs, function.get("name"), f"{param}.function.name", "tools")


def function_call_from_openai(specs: list[ToolSpec], choice: Any, param: str = "function_call") -> list[ToolSpec]:
    """The legacy `function_call`: `"none"`, `"auto"` or `{"name": ...}`."""
    if choice is None or choice == "auto":
        return specs
    if choice == "none":
        return []
    expect_type(choice, (str, dict), param)
    if isinstance(choice, str):
        raise WireError(
            f"Invalid value for '{param}': {choice!r}. Supported: 'none', 'auto' or {{\"name\": \"...\"}}.", param=param
        )
    return _chosen(specs, choice.get("name"), f"{param}.name", "functions")


# ---------------------------------------------------------------- settings


def settings_to_openai(settings: GenerationSettings, stop: Sequence[str] = (), *, zhipu: bool = False) -> dict[str, Any]:
    """Sampling settings as request fields (only what differs from the server defaults, for the extensions)."""
    body: dict[str, Any] = {"max_tokens": settings.max_new_tokens, "top_p": settings.top_p}
    if zhipu and settings.temperature <= 0:
        body["do_sample"] = False  # Zhipu rejects temperature 0; do_sample=false is its greedy switch
    else:
        body["temperature"] = settings.temperature
    if settings.seed is not None:
        body["seed"] = settings.seed
    # Not OpenAI parameters, but vLLM/SGLang/llama.cpp take them: only send when asked for.
    if settings.top_k:
        body["top_k"] = settings.top_k
    if settings.repetition_penalty != 1.0:
        body["repetition_penalty"] = settings.repetition_penalty
    stops = list(dict.fromkeys([*stop, *settings.stop]))
    if stops:
        body["stop"] = stops
    return body


def _number_in(body: dict[str, Any], key: str, low: float, high: float, *, low_open: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    expect_type(value, float, key)
    if not (low < value <= high if low_open else low <= value <= high):  # NaN fails both
        bound = f"above {low} and at most {high}" if low_open else f"between {low} and {high}"
        raise WireError(f"Invalid '{key}': expected a value {bound}, but got {value} instead.", param=key)
    return float(value)


def settings_from_openai(body: dict[str, Any]) -> GenerationSettings:
    """A request's sampling fields (plus the `top_k` / `repetition_penalty` extensions)."""
    settings = GenerationSettings()
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is not None:
        if expect_type(max_tokens, int, key) < 1:
            raise WireError(
                f"Invalid '{key}': integer below minimum value. Expected a value >= 1, but got {max_tokens} instead.",
                param=key, code="integer_below_min_value",
            )
        settings.max_new_tokens = max_tokens
    temperature = _number_in(body, "temperature", 0.0, 2.0)
    if temperature is not None:
        settings.temperature = temperature
    top_p = _number_in(body, "top_p", 0.0, 1.0)
    if top_p is not None:
        settings.top_p = max(top_p, 1e-6)  # 0 keeps only the most likely token, as the smallest nucleus does
    penalty = _number_in(body, "repetition_penalty", 0.0, 10.0, low_open=True)
    if penalty is not None:
        settings.repetition_penalty = penalty
    if body.get("top_k") is not None:
        settings.top_k = max(0, expect_type(body["top_k"], int, "top_k"))  # vLLM's "off" is -1, ours 0
    if body.get("seed") is not None:
        seed = expect_type(body["seed"], int, "seed")
        if not SEED_RANGE[0] <= seed < SEED_RANGE[1]:
            raise WireError(f"Invalid 'seed': {seed} is outside the 64-bit range.", param="seed")
        settings.seed = seed
    stop = body.get("stop")
    if stop is not None:
        expect_type(stop, (str, list), "stop")
        stops = [stop] if isinstance(stop, str) else [expect_type(s, str, f"stop[{i}]") for i, s in enumerate(stop)]
        settings.stop = [s for s in stops if s]
    return settings


# ---------------------------------------------------------------- answers: reading (the client)


@dataclass
class ChunkParts:
    """What one answer chunk carries: text (chat `content` or completions `text`), tool-call
    deltas, a finish reason, usage. A whole non-streamed answer reads the same way."""

    text: list[str]
    tool_calls: list[dict[str, Any]]
    finish: str | None
    usage: dict[str, Any] | None


def read_chunk(chunk: dict[str, Any]) -> ChunkParts:
    parts = ChunkParts(text=[], tool_calls=[], finish=None, usage=chunk.get("usage") or None)
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta") or choice.get("message") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        text = text or choice.get("text")
        if isinstance(text, str) and text:
            parts.text.append(text)
        if isinstance(delta, dict):
            if delta.get("tool_calls"):
                parts.tool_calls.extend(delta["tool_calls"])
            elif delta.get("function_call"):  # the legacy single-call field
                parts.tool_calls.append({"index": 0, "function": delta["function_call"]})
        if choice.get("finish_reason"):
            parts.finish = str(choice["finish_reason"])
    return parts


def done_from_openai(finish: str, usage: dict[str, Any] | None) -> ModelDone:
    usage = usage if isinstance(usage, dict) else {}
    # Zhipu adds `sensitive` (filtered) and `network_error` (its inference failed).
    finish = {"function_call": "tool_calls", "network_error": "error"}.get(finish, finish)

    def count(key: str) -> int:
        try:
            return int(usage.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    return ModelDone(
        finish_reason=finish if finish in ("stop", "length", "tool_calls", "error") else "stop",
        prompt_tokens=count("prompt_tokens"),
        completion_tokens=count("completion_tokens"),
        cached_tokens=_cached_tokens(usage),
    )


def _cached_tokens(usage: dict[str, Any]) -> int:
    details = usage.get("prompt_tokens_details")
    try:
        return int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------- answers: writing (the server)


def usage_to_openai(done: ModelDone | None) -> dict[str, Any]:
    p, c = (done.prompt_tokens, done.completion_tokens) if done else (0, 0)
    cached = done.cached_tokens if done else 0  # prompt tokens served from the KV cache, as OpenAI reports
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": cached}}


def finish_reason_to_openai(done: ModelDone | None, calls: Sequence[ToolCall], *, legacy: bool = False) -> str:
    if calls:
        return "function_call" if legacy else "tool_calls"
    reason = done.finish_reason if done else "stop"
    return reason if reason in ("stop", "length") else "stop"


@dataclass(frozen=True)
class AnswerWriter:
    """The answer to one request, whole (`completion`) or as stream chunks.

    `legacy`: the request used `functions`, so calls go out as the single `function_call`
    (the first call; the legacy form has room for one). `include_usage`: every chunk carries
    `usage` (null until the last), as `stream_options.include_usage` asks.
    """

    id: str
    model: str
    created: int
    legacy: bool = False
    include_usage: bool = False

    def _calls(self, calls: Sequence[ToolCall]) -> list[ToolCall]:
        return list(calls[:1]) if self.legacy else list(calls)

    def completion(self, text: str, calls: Sequence[ToolCall], done: ModelDone | None) -> dict[str, Any]:
        calls = self._calls(calls)
        message: dict[str, Any] = {"role": "assistant", "content": text if (text or not calls) else None}
        if calls and self.legacy:
            message["function_call"] = tool_call_to_openai(calls[0])["function"]
        elif calls:
            message["tool_calls"] = [tool_call_to_openai(c) for c in calls]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{
                "index": 0, "message": message, "logprobs": None,
                "finish_reason": finish_reason_to_openai(done, calls, legacy=self.legacy),
            }],
            "usage": usage_to_openai(done),
        }

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, int] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model}
        body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if self.include_usage:
            body["usage"] = usage
        return body

    def opening_chunk(self) -> dict[str, Any]:
        return self.chunk({"role": "assistant", "content": ""})

    def text_chunk(self, text: str) -> dict[str, Any]:
        return self.chunk({"content": text})

    def call_chunks(self, index: int, call: ToolCall) -> list[dict[str, Any]]:
        """OpenAI's shape: the id and name first, then the arguments as a delta of their own."""
        if self.legacy and index > 0:
            return []
        arguments = _arguments_text(call)
        if self.legacy:
            return [self.chunk({"function_call": {"name": call.name, "arguments": ""}}),
                    self.chunk({"function_call": {"arguments": arguments}})]
        head = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        return [self.chunk({"tool_calls": [head]}),
                self.chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})]

    def closing_chunks(self, done: ModelDone | None, calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
        chunks = [self.chunk({}, finish_reason_to_openai(done, self._calls(calls), legacy=self.legacy))]
        if self.include_usage:
            chunks.append(self.chunk(None, usage=usage_to_openai(done)))
        return chunks


# ---------------------------------------------------------------- error bodies


def error_to_openai(
    message: str, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body: the official clients raise their usual exceptions from it."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_from_openai(body: Any) -> tuple[str, str, str]:
    """(message, type, code) from the error bodies servers send: OpenAI, old vLLM, Zhipu, plain text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return (
                str(error.get("message") or error.get("msg") or body.get("message") or error.get("detail") or ""),
                str(error.get("type") or ""),
                str(error.get("code") or ""),
            )
        return str(error), "", ""
    return str(body or ""), "", ""


# ---------------------------------------------------------------- server-sent events

SSE_DONE = "data: [DONE]\n\n"


def sse_event(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def iter_sse(lines: AsyncIterator[str]) -> AsyncIterator[str]:
    """`data` payloads of a server-sent event stream, up to `[DONE]` (multi-line data joined)."""
    data: list[str] = []
    async for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                payload = "\n".join(data)
                data = []
                if payload.strip() == "[DONE]":
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        payload = "\n".join(data)
        if payload.strip() != "[DONE]":
            yield payload
