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

The JSON is written and read by `openai_wire`, the HTTP (retries, streams) is `openai_http`'s,
and `openai:URL#MODEL` / `zhipu:MODEL` specs are parsed by `openai_spec`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, AsyncIterator, Literal, Sequence

import httpx

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.errors import ContextOverflowError, GlmAgentError, ModelError
from glm_agent.core.events import ModelEvent, TextDelta, ToolCallReady
from glm_agent.core.messages import Message
from glm_agent.models.constrain import normalize_tool_choice
from glm_agent.models.dialects.base import route_action
from glm_agent.models.openai_http import RETRY_STATUS, EndpointClient, HTTPStatusError, is_context_overflow
from glm_agent.models.openai_spec import DEFAULT_BASE_URL, model_from_spec
from glm_agent.models.openai_wire import (
    ToolCallAccumulator,
    done_from_openai,
    messages_to_openai,
    read_chunk,
    settings_to_openai,
    tools_to_openai,
)

__all__ = ["OpenAIModel", "ToolMode"]

ToolMode = Literal["native", "dialect", "auto"]


class _ToolsRejected(GlmAgentError):
    """The server refused `tools` (no tool parser / template without tools)."""


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
        self.extra_body = dict(extra_body or {})
        self.zhipu = ("bigmodel.cn" in self.base_url) if zhipu is None else zhipu
        self.name = name or f"openai:{model or self.base_url}"
        self.endpoint = EndpointClient(
            self.base_url, self.api_key, timeout=self.timeout, max_retries=max_retries, backoff=backoff,
            max_backoff=max_backoff, headers=dict(headers or {}), transport=transport,
        )
        self._dialect = None
        self._send_stream_options = True

    @classmethod
    def from_spec(cls, spec: str, **overrides: Any) -> "OpenAIModel":
        """`openai:URL#MODEL?opts` / `zhipu:MODEL` (see `openai_spec`); keyword overrides win when not None."""
        return model_from_spec(spec, **overrides)

    def __repr__(self) -> str:
        return f"OpenAIModel(model={self.model!r}, base_url={self.base_url!r}, tool_mode={self.tool_mode!r})"

    def dialect(self):
        if self._dialect is None:
            from glm_agent.models.dialects import get_dialect

            self._dialect = get_dialect(self.dialect_name)
        return self._dialect

    # -- ChatModel

    async def stream(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: GenerationSettings | None = None,
    ) -> AsyncIterator[ModelEvent]:
        settings = settings or GenerationSettings()
        try:
            choice = normalize_tool_choice(settings.tool_choice, tools)
        except ValueError as exc:
            raise ModelError(str(exc)) from None
        if choice == "none":
            tools = []
        elif isinstance(choice, dict) and self.tool_mode == "dialect":
            tools = [t for t in tools if t.name == choice["name"]]  # a prompt cannot force it; offer only it
        model = await self._resolve_model()
        if tools and self.tool_mode == "dialect":
            async for event in self._stream_dialect(model, messages, tools, settings):
                yield event
            return
        try:
            async for event in self._stream_chat(model, messages, tools, settings, choice):
                yield event
        except _ToolsRejected:
            self.tool_mode = "dialect"  # for good: this server has no tool parser
            async for event in self._stream_dialect(model, messages, tools, settings):
                yield event

    async def aclose(self) -> None:
        await self.endpoint.aclose()

    # -- requests

    async def _resolve_model(self) -> str:
        if self.model:
            return self.model
        try:
            data = await self.endpoint.get_json("models")
        except HTTPStatusError as exc:
            raise self._error(exc) from None
        models = data.get("data") if isinstance(data, dict) else None
        if not models or not isinstance(models[0], dict) or not models[0].get("id"):
            raise ModelError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
        self.model = str(models[0]["id"])
        return self.model

    def _body(self, model: str, settings: GenerationSettings, stop: Sequence[str] = ()) -> dict[str, Any]:
        body = {"model": model, **settings_to_openai(settings, stop, zhipu=self.zhipu), **self.extra_body}
        body["stream"] = self.use_stream
        if self.use_stream and self._send_stream_options:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _post(self, path: str, body: dict[str, Any], *, tools_sent: bool = False) -> httpx.Response:
        """POST, falling back where a server refuses what it need not have: `stream_options`, `tools`."""
        try:
            return await self.endpoint.post(path, body)
        except HTTPStatusError as exc:
            text = exc.message.lower()
            if body.get("stream_options") and exc.status in (400, 422) and "stream_options" in text:
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
            raise self._error(exc) from None

    def _error(self, exc: HTTPStatusError) -> ModelError:
        """What a final error status means for the user, and what to check."""
        status, message, path = exc.status, exc.message, exc.path
        where = f"{self.base_url}/{path}"
        said = f" The server said: {message}" if message else ""
        if is_context_overflow(status, message, exc.code):
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
        if status in RETRY_STATUS:
            return ModelError(f"{where} failed with HTTP {status} after {self.max_retries} retries.{said}")
        if status >= 500:
            return ModelError(f"{where} failed with HTTP {status}.{said}")
        return ModelError(f"{where} rejected the request (HTTP {status}).{said}")

    # -- the two tool modes

    async def _stream_chat(
        self, model: str, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings,
        choice: str | dict = "auto",
    ) -> AsyncIterator[ModelEvent]:
        body = self._body(model, settings)
        body["messages"] = messages_to_openai(messages)
        if tools:
            body["tools"] = tools_to_openai(tools)
            if choice != "auto":  # "required", or one function by name (the server enforces it)
                body["tool_choice"] = choice if isinstance(choice, str) else {
                    "type": "function", "function": {"name": choice["name"]}}
        if settings.response_format is not None:
            body["response_format"] = settings.response_format
        # In auto mode the content also goes through the dialect parser: a server without a tool
        # parser leaves the model's call text there (GLM-4 #124), and this recovers it.
        parser = self.dialect().parser(tools) if tools and self.tool_mode == "auto" else None
        calls = ToolCallAccumulator()
        finish, usage = "stop", None
        response = await self._post("chat/completions", body, tools_sent=bool(tools))
        found_in_content = False
        async with contextlib.aclosing(self.endpoint.chunks(response, "chat/completions", self.use_stream)) as chunks:
            async for chunk in chunks:
                parts = read_chunk(chunk)
                usage = parts.usage or usage
                for text in parts.text:
                    if parser is None:
                        yield TextDelta(text=text)
                        continue
                    for event in _declared_only(parser.feed(text), tools):
                        found_in_content |= isinstance(event, ToolCallReady)
                        yield event
                calls.add(parts.tool_calls)
                finish = parts.finish or finish
        if parser is not None:
            for event in _declared_only(parser.finish(), tools):
                found_in_content |= isinstance(event, ToolCallReady)
                yield event
        # Native calls skip the dialect parser: map action names (`search` for the browser) here.
        by_name = {t.name: t for t in tools}
        native = [route_action(call, by_name) for call in calls.finish()]
        for call in native:
            yield ToolCallReady(call=call)
        if found_in_content and not native:
            self.tool_mode = "dialect"
        if native or found_in_content:
            finish = "tool_calls"
        yield done_from_openai(finish, usage)

    async def _stream_dialect(
        self, model: str, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings
    ) -> AsyncIterator[ModelEvent]:
        dialect = self.dialect()
        body = self._body(model, settings, dialect.stop_strings)
        body["prompt"] = dialect.render(messages, tools)
        response = await self._post("completions", body)
        parser = dialect.parser(tools)
        finish, usage, any_call = "stop", None, False
        async with contextlib.aclosing(self.endpoint.chunks(response, "completions", self.use_stream)) as chunks:
            async for chunk in chunks:
                parts = read_chunk(chunk)
                usage = parts.usage or usage
                for text in parts.text:
                    for event in parser.feed(text):
                        any_call |= isinstance(event, ToolCallReady)
                        yield event
                finish = parts.finish or finish
        for event in parser.finish():
            any_call |= isinstance(event, ToolCallReady)
            yield event
        yield done_from_openai("tool_calls" if any_call else finish, usage)


def _declared_only(events: list, tools: Sequence[ToolSpec]) -> list:
    """Content parsed as a call to a tool nobody declared was prose after all ("Result\n{...}")."""
    names = {t.name for t in tools}  # the dialect parser names built-in calls by their tool
    return [
        e if not isinstance(e, ToolCallReady) or e.call.name in names
        else TextDelta(text=f"{e.call.name}\n{e.call.raw_arguments or ''}")
        for e in events
    ]
