"""`OpenAIModel`: a ChatModel over any OpenAI-compatible endpoint (vLLM, SGLang, Ollama, Zhipu, ours).

Two ways to get tool calls out of a server:

- `native`: send `tools`, read `tool_calls` (streamed deltas are accumulated per `index`, so
  split arguments and parallel calls come out whole).
- `dialect`: for servers without a tool parser for the model (vLLM serving GLM-4 without
  `--tool-call-parser`, the most common complaint about GLM tool use): render the whole
  conversation with a GLM dialect, send it to `/completions` as a raw prompt, and parse the
  reply with the same dialect's streaming parser.
- `auto` (default) starts native and switches to dialect for good when the server rejects
  `tools`, or when it answers with tool-call text in `content` (the call in that answer is
  recovered by the dialect parser, so nothing is lost).

Model specs for the CLI: `openai:URL#model` (`openai:http://127.0.0.1:8000/v1#glm-4-9b-chat`),
`openai:URL` (the model is the server's first `/models` entry), `openai:#model` or
`openai:model` (base URL from `OPENAI_BASE_URL`, else 127.0.0.1:8000/v1), `zhipu:MODEL`
(Zhipu's API, key from `ZHIPUAI_API_KEY`). Options may follow as a query:
`openai:URL#model?tool_mode=dialect&dialect=glm4&stream=false&timeout=60&max_retries=2`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import re
import time
from typing import Any, AsyncIterator, Literal, Sequence
from urllib.parse import parse_qsl

import httpx

from glm_agent.core.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    new_call_id,
)
from glm_agent.core.errors import ContextOverflowError, ModelError
from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.events import ModelDone, ModelEvent, TextDelta, ToolCallReady

__all__ = [
    "OpenAIModel",
    "ToolMode",
    "ZHIPU_BASE_URL",
    "DEFAULT_BASE_URL",
    "parse_model_spec",
    "model_from_spec",
    "to_openai_messages",
    "tool_call_from_openai",
    "is_context_overflow",
    "iter_sse",
]

ToolMode = Literal["native", "dialect", "auto"]
ZHIPU_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # `glm-agent serve` defaults

# What servers say when the prompt does not fit (OpenAI, vLLM, SGLang, llama.cpp, Ollama, Zhipu).
_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long|"
    r"input is too long|exceeds? (the )?(max|context|available context)|context size|reduce the length|超长|超过.*长度",
    re.I,
)
_ZHIPU_OVERFLOW_CODES = {"1261"}
_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


# ---------------------------------------------------------------- messages


def _arguments_text(call: ToolCall) -> str:
    # A call whose arguments did not parse goes back verbatim: the model should see what it wrote.
    if call.arguments_error and call.raw_arguments is not None:
        return call.raw_arguments
    return json.dumps(call.arguments, ensure_ascii=False)


def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as OpenAI chat messages (assistant `tool_calls`, `tool` role with its call id)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, (SystemMessage, UserMessage)):
            out.append({"role": message.role, "content": message.content})
        elif isinstance(message, AssistantMessage):
            item: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                item["tool_calls"] = [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": _arguments_text(c)}}
                    for c in message.tool_calls
                ]
            elif item["content"] is None:
                item["content"] = ""
            out.append(item)
        elif isinstance(message, ToolMessage):
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content})
        else:  # pragma: no cover - the Message union is closed
            raise TypeError(f"cannot send a {type(message).__name__} to an OpenAI endpoint")
    return out


def tool_call_from_openai(name: str, arguments: Any, call_id: str | None = None) -> ToolCall:
    """A ToolCall from OpenAI's `function.name` / `function.arguments` (a JSON string, or an object)."""
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
    except json.JSONDecodeError as exc:
        return ToolCall(id=call_id, name=name, raw_arguments=text, arguments_error=f"arguments are not valid JSON: {exc}")
    if not isinstance(value, dict):
        return ToolCall(
            id=call_id, name=name, raw_arguments=text, arguments_error=f"expected a JSON object, got {type(value).__name__}"
        )
    return ToolCall(id=call_id, name=name, arguments=value, raw_arguments=text)


class _CallAccumulator:
    """Streamed `tool_calls` deltas, keyed by `index`: the id and name come first, arguments in pieces."""

    def __init__(self) -> None:
        self.calls: dict[int, dict[str, Any]] = {}

    def add(self, deltas: list[dict[str, Any]]) -> None:
        for position, delta in enumerate(deltas):
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


# ---------------------------------------------------------------- errors


def _error_parts(body: Any) -> tuple[str, str, str]:
    """(message, type, code) from the error bodies servers send: OpenAI, old vLLM, Zhipu, plain text."""
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            return (
                str(error.get("message") or error.get("msg") or body.get("message") or ""),
                str(error.get("type") or ""),
                str(error.get("code") or ""),
            )
        return str(error), "", ""
    return str(body or ""), "", ""


def is_context_overflow(status: int, message: str, code: str = "") -> bool:
    if code in ("context_length_exceeded", "string_above_max_length") or code in _ZHIPU_OVERFLOW_CODES:
        return True
    return status in (400, 413, 422, 500) and bool(_OVERFLOW.search(message))


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait per `retry-after-ms` / `Retry-After` (seconds or an HTTP date)."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _ToolsRejected(Exception):
    """The server refused `tools` (no tool parser / template without tools)."""


# ---------------------------------------------------------------- SSE


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


# ---------------------------------------------------------------- the model


class OpenAIModel:
    """A ChatModel over an OpenAI-compatible `/chat/completions` endpoint.

    ```python
    model = OpenAIModel("glm-4-9b-chat", base_url="http://127.0.0.1:8000/v1")
    agent = Agent(model, tools=[...])
    ```
    `model=None` uses the server's first `/models` entry. The API key comes from `api_key`,
    else `OPENAI_API_KEY`, else `ZHIPUAI_API_KEY` (none is fine for local servers).
    Retries (`max_retries`, exponential backoff from `backoff` seconds, capped at `max_backoff`,
    honouring `Retry-After`) cover 429, 5xx and connection errors before any output arrived.
    `transport` is an httpx transport (tests pass `httpx.MockTransport`).
    """

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        tool_mode: ToolMode = "auto",
        dialect: str = "glm4",
        stream: bool = True,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        name: str | None = None,
        zhipu: bool | None = None,
    ):
        if tool_mode not in ("native", "dialect", "auto"):
            raise ValueError(f"tool_mode must be 'native', 'dialect' or 'auto', not {tool_mode!r}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.api_key = api_key or os.environ.get("OPENAI_API_KEY") or os.environ.get("ZHIPUAI_API_KEY")
        self.tool_mode: ToolMode = tool_mode
        self.dialect_name = dialect
        self.use_stream = stream
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self.transport = transport
        self.zhipu = ("bigmodel.cn" in self.base_url) if zhipu is None else zhipu
        self.name = name or f"openai:{model or self.base_url}"
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._dialect = None
        self._send_stream_options = True

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> "OpenAIModel":
        """`openai:URL#MODEL?opts` / `zhipu:MODEL` (see `parse_model_spec`); keyword overrides win when not None."""
        return model_from_spec(spec, **overrides)

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r}, tool_mode={self.tool_mode!r})"

    # -- plumbing

    def _http(self) -> httpx.AsyncClient:
        # An httpx client's pool belongs to one event loop; `run_sync` callers make a new loop each time.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            headers = {"Accept": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(
                base_url=self.base_url + "/", headers=headers, timeout=self.timeout, transport=self.transport
            )
            self._client_loop = loop
        return self._client

    def dialect(self):
        if self._dialect is None:
            from glm_agent.models.dialects import get_dialect

            self._dialect = get_dialect(self.dialect_name)
        return self._dialect

    def _error(self, status: int, message: str, code: str, path: str) -> ModelError:
        where = f"{self.base_url}/{path}"
        said = f" The server said: {message}" if message else ""
        if is_context_overflow(status, message, code):
            return ContextOverflowError(f"The conversation is too long for {self.model or 'the model'}'s context window.{said}")
        if status in (401, 403):
            return ModelError(
                f"{where} refused the API key (HTTP {status}). Check the key (api_key=, OPENAI_API_KEY or ZHIPUAI_API_KEY).{said}"
            )
        if status == 404 and path == "completions":
            return ModelError(
                f"tool_mode='dialect' sends the {self.dialect_name} prompt to {where}, which this server does "
                f"not have (404). Use tool_mode='native' with a server that parses tool calls.{said}"
            )
        if status == 404:
            return ModelError(
                f"{where} answered 404: check the base URL (it usually ends in /v1) and the model name "
                f"{self.model!r} (GET {self.base_url}/models lists what the server has).{said}"
            )
        if status == 429:
            return ModelError(f"{where} kept rate-limiting (HTTP 429) after {self.max_retries} retries.{said}")
        if status in _RETRY_STATUS:
            return ModelError(f"{where} failed with HTTP {status} after {self.max_retries} retries.{said}")
        if status >= 500:
            return ModelError(f"{where} failed with HTTP {status}.{said}")
        return ModelError(f"{where} rejected the request (HTTP {status}).{said}")

    async def _open(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST and return the open response once its status is 2xx, retrying what is worth retrying."""
        client = self._http()
        attempt = 0
        while True:
            wait: float | None = None
            try:
                request = client.build_request("POST", path, json=body)
                response = await client.send(request, stream=True)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt >= self.max_retries:
                    raise ModelError(
                        f"Cannot reach {self.base_url}/{path} after {attempt + 1} attempts "
                        f"({type(exc).__name__}: {exc}). Is the server running, and is the base URL right?"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response
                raw = await response.aread()
                await response.aclose()
                try:
                    parsed: Any = json.loads(raw)
                except ValueError:
                    parsed = raw.decode("utf-8", "replace")
                message, _, code = _error_parts(parsed)
                status = response.status_code
                if status not in _RETRY_STATUS or attempt >= self.max_retries or is_context_overflow(status, message, code):
                    raise _HTTPError(status, message, code)
                wait = _retry_after(response)
            delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.75 + random.random() / 2)
            await asyncio.sleep(min(self.max_backoff * 2, wait) if wait is not None else delay)
            attempt += 1

    async def _resolve_model(self) -> str:
        if self.model:
            return self.model
        try:
            response = await self._http().get("models")
        except httpx.HTTPError as exc:
            raise ModelError(f"Cannot reach {self.base_url}/models to find the model name ({exc}).") from exc
        if response.status_code >= 400:
            message, _, code = _error_parts(_json_or_text(response))
            raise self._error(response.status_code, message, code, "models")
        data = _json_or_text(response)
        models = data.get("data") if isinstance(data, dict) else None
        if not models:
            raise ModelError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
        self.model = str(models[0]["id"])
        return self.model

    def _settings_body(self, settings: GenerationSettings, stop: Sequence[str] = ()) -> dict[str, Any]:
        body: dict[str, Any] = {"max_tokens": settings.max_new_tokens, "top_p": settings.top_p}
        if self.zhipu and settings.temperature <= 0:
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
        body.update(self.extra_body)
        return body

    # -- ChatModel

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: GenerationSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        settings = settings or GenerationSettings()
        model = await self._resolve_model()
        if tools and self.tool_mode == "dialect":
            async for event in self._stream_dialect(model, messages, tools, settings):
                yield event
            return
        try:
            async for event in self._stream_chat(model, messages, tools, settings):
                yield event
        except _ToolsRejected:
            self.tool_mode = "dialect"  # for good: this server has no tool parser
            async for event in self._stream_dialect(model, messages, tools, settings):
                yield event

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its loop is gone; nothing left to release there
                pass

    async def _post(self, path: str, body: dict[str, Any], *, tools_sent: bool = False) -> httpx.Response:
        try:
            return await self._open(path, body)
        except _HTTPError as exc:
            text = exc.message.lower()
            if (
                body.get("stream_options")
                and exc.status in (400, 422)
                and "stream_options" in text
            ):
                self._send_stream_options = False
                return await self._post(path, {k: v for k, v in body.items() if k != "stream_options"}, tools_sent=tools_sent)
            if (
                tools_sent
                and self.tool_mode == "auto"
                and exc.status in (400, 422, 500, 501)
                and "tool" in text
                and not is_context_overflow(exc.status, exc.message, exc.code)
            ):
                raise _ToolsRejected(exc.message) from exc
            raise self._error(exc.status, exc.message, exc.code, path) from None

    async def _stream_chat(
        self, model: str, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings
    ) -> AsyncIterator[ModelEvent]:
        body: dict[str, Any] = {"model": model, "messages": to_openai_messages(messages), **self._settings_body(settings)}
        if tools:
            body["tools"] = [t.openai_schema() for t in tools]
        # In auto mode the content also goes through the dialect parser: a server without a tool
        # parser leaves the model's call text there (GLM-4 #124), and this recovers it.
        parser = self.dialect().parser(tools) if tools and self.tool_mode == "auto" else None
        calls = _CallAccumulator()
        finish, usage = "stop", {}
        body["stream"] = self.use_stream
        if self.use_stream and self._send_stream_options:
            body["stream_options"] = {"include_usage": True}
        response = await self._post("chat/completions", body, tools_sent=bool(tools))
        found_in_content = False
        try:
            async for chunk in self._chunks(response, "chat/completions"):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or choice.get("message") or {}
                    text = delta.get("content")
                    if text:
                        if parser is None:
                            yield TextDelta(text)
                        else:
                            for event in _declared_only(parser.feed(text), tools):
                                found_in_content |= isinstance(event, ToolCallReady)
                                yield event
                    if delta.get("tool_calls"):
                        calls.add(delta["tool_calls"])
                    elif delta.get("function_call"):  # the legacy single-call field
                        calls.add([{"index": 0, "function": delta["function_call"]}])
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            await response.aclose()
        if parser is not None:
            for event in _declared_only(parser.finish(), tools):
                found_in_content |= isinstance(event, ToolCallReady)
                yield event
        native = calls.finish()
        for call in native:
            yield ToolCallReady(call)
        if found_in_content and not native:
            self.tool_mode = "dialect"
        if native or found_in_content:
            finish = "tool_calls"
        yield _done(finish, usage)

    async def _stream_dialect(
        self, model: str, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings
    ) -> AsyncIterator[ModelEvent]:
        dialect = self.dialect()
        body: dict[str, Any] = {
            "model": model,
            "prompt": dialect.render(messages, tools),
            **self._settings_body(settings, dialect.stop_strings),
            "stream": self.use_stream,
        }
        if self.use_stream and self._send_stream_options:
            body["stream_options"] = {"include_usage": True}
        response = await self._post("completions", body)
        parser = dialect.parser(tools)
        finish, usage, any_call = "stop", {}, False
        try:
            async for chunk in self._chunks(response, "completions"):
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if choice.get("text"):
                        for event in parser.feed(choice["text"]):
                            any_call |= isinstance(event, ToolCallReady)
                            yield event
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        finally:
            await response.aclose()
        for event in parser.finish():
            any_call |= isinstance(event, ToolCallReady)
            yield event
        yield _done("tool_calls" if any_call else finish, usage)

    async def _chunks(self, response: httpx.Response, path: str) -> AsyncIterator[dict[str, Any]]:
        """The response's chunks: SSE events, or the one JSON body (asked for, or a server that ignored `stream`)."""
        if not self.use_stream or "json" in response.headers.get("content-type", ""):
            yield await _read_json(response, self)
            return
        try:
            async for payload in iter_sse(response.aiter_lines()):
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    raise ModelError(f"{self.base_url}/{path} sent a stream chunk that is not JSON: {payload[:200]!r}")
                if isinstance(chunk, dict) and chunk.get("error"):
                    message, _, code = _error_parts(chunk)
                    if is_context_overflow(400, message, code):
                        raise ContextOverflowError(f"The conversation is too long for the model. The server said: {message}")
                    raise ModelError(f"{self.base_url}/{path} failed while streaming: {message}")
                if isinstance(chunk, dict):
                    yield chunk
        except httpx.HTTPError as exc:
            raise ModelError(f"The stream from {self.base_url}/{path} broke off ({type(exc).__name__}: {exc}).") from exc


def _declared_only(events: list, tools: Sequence[ToolSpec]) -> list:
    """Content parsed as a call to a tool nobody declared was prose after all ("Result\n{...}")."""
    names = {t.name for t in tools} | {t.glm_builtin for t in tools if t.glm_builtin}
    return [
        e if not isinstance(e, ToolCallReady) or e.call.name in names
        else TextDelta(f"{e.call.name}\n{e.call.raw_arguments or ''}")
        for e in events
    ]


def _done(finish: str, usage: dict[str, Any]) -> ModelDone:
    # Zhipu adds `sensitive` (filtered) and `network_error` (its inference failed).
    finish = {"function_call": "tool_calls", "network_error": "error"}.get(finish, finish)
    return ModelDone(
        finish_reason=finish if finish in ("stop", "length", "tool_calls", "error") else "stop",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _json_or_text(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


async def _read_json(response: httpx.Response, model: OpenAIModel) -> dict[str, Any]:
    raw = await response.aread()
    try:
        value = json.loads(raw)
    except ValueError:
        raise ModelError(f"{model.base_url} answered with something that is not JSON: {raw[:200]!r}") from None
    if not isinstance(value, dict):
        raise ModelError(f"{model.base_url} answered with JSON that is not an object: {raw[:200]!r}")
    return value


# ---------------------------------------------------------------- specs

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_OPTIONS = {
    "tool_mode": str,
    "dialect": str,
    "stream": lambda v: _BOOL[v.lower()],
    "timeout": float,
    "connect_timeout": float,
    "max_retries": int,
    "backoff": float,
    "api_key_env": str,
}


def parse_model_spec(spec: str) -> dict[str, Any]:
    """`openai:URL#model?opts` / `zhipu:MODEL?opts` -> OpenAIModel keyword arguments.

    Raises ValueError with the accepted forms when the spec is not one of them.
    """
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("openai", "zhipu"):
        raise ValueError(f"not an API model spec: {spec!r} (use openai:URL#MODEL or zhipu:MODEL)")
    options: dict[str, Any] = {}
    if "?" in rest:
        rest, _, query = rest.partition("?")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in _OPTIONS:
                raise ValueError(f"unknown option {key!r} in {spec!r}; known: {', '.join(sorted(_OPTIONS))}")
            try:
                options[key] = _OPTIONS[key](value)
            except (KeyError, ValueError):
                raise ValueError(f"bad value {value!r} for option {key!r} in {spec!r}") from None
    if scheme == "zhipu":
        if not rest or "://" in rest:
            raise ValueError(f"zhipu: needs a model name, e.g. zhipu:glm-4-plus (got {spec!r})")
        kwargs: dict[str, Any] = {"model": rest, "base_url": ZHIPU_BASE_URL, "zhipu": True, "tool_mode": "native"}
        kwargs["api_key"] = os.environ.get("ZHIPUAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    else:
        url, _, model = rest.partition("#")
        if url and "://" not in url:
            if model:
                raise ValueError(f"the URL in {spec!r} needs a scheme, e.g. openai:http://127.0.0.1:8000/v1#{model}")
            url, model = "", url  # `openai:MODEL`
        kwargs = {"model": model or None, "base_url": url or None}
    env = options.pop("api_key_env", None)
    if env:
        kwargs["api_key"] = os.environ.get(env)
    kwargs.update(options)
    return kwargs


def model_from_spec(spec: str, **overrides: Any) -> OpenAIModel:
    kwargs = parse_model_spec(spec)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return OpenAIModel(**kwargs)
