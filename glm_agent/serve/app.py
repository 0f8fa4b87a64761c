"""An OpenAI-compatible HTTP server over any ChatModel (`glm-agent serve`).

`POST /v1/chat/completions` (streamed or not, `tools` in, `tool_calls` out), `GET /v1/models`.
The model runs on its own thread and event loop, one request at a time in arrival order
(the local engine decodes a single stream): a long CPU generation never stalls the HTTP side,
which keeps answering `/v1/models`, validation errors and queued clients. Text deltas are
forwarded as the model produces them, tools or not; only the model's own parser decides what
is a tool call (the GLM basic_demo server buffered whole answers whenever tools were attached).

Errors use OpenAI's body, `{"error": {"message", "type", "param", "code"}}`, so the official
clients raise their usual exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from glm_agent.core.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
    new_call_id,
)
from glm_agent.core.contracts import ChatModel, GenerationSettings, ToolSpec
from glm_agent.core.errors import ContextOverflowError, ModelError
from glm_agent.core.events import ModelDone, ModelEvent, TextDelta, ToolCallReady
from glm_agent.models.openai import tool_call_from_openai

__all__ = ["create_app", "APIError", "ChatRequest", "parse_chat_request", "EngineWorker", "run_server", "serve_in_thread"]

MAX_BODY_BYTES = 8 << 20
log = logging.getLogger("glm_agent.serve.app")


class APIError(Exception):
    """An error answered with OpenAI's error body."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


def _model_error(exc: Exception) -> APIError:
    """The error body for what generation raised: overflow is the client's 400, the rest our 500."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, ModelError):
        return APIError(500, f"The model failed: {exc}", type="server_error", code="model_error")
    # A bug: answer it like any model failure (the connection stays usable) and log the traceback.
    log.error("generation failed", exc_info=exc)
    return APIError(500, f"Internal server error: {type(exc).__name__}: {exc}", type="server_error")


# ---------------------------------------------------------------- request validation

_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "an object"}


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return {str: "string", int: "integer", float: "number", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _check(value: Any, expected: type | tuple[type, ...], param: str) -> Any:
    kinds = expected if isinstance(expected, tuple) else (expected,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        wanted = " or ".join(_JSON_TYPES[k] for k in kinds)
        raise APIError(
            400, f"Invalid type for '{param}': expected {wanted}, but got {_type_name(value)} instead.", param=param, code="invalid_type"
        )
    return value


def _text(content: Any, param: str) -> str:
    """A message's content: a string, or an array of text parts."""
    if content is None:
        return ""
    _check(content, (str, list), param)
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        _check(part, dict, f"{param}[{i}]")
        if part.get("type") != "text":
            raise APIError(
                400,
                f"Invalid value for '{param}[{i}].type': only 'text' content parts are supported by this model, not {part.get('type')!r}.",
                param=f"{param}[{i}].type",
                code="invalid_value",
            )
        parts.append(_check(part.get("text"), str, f"{param}[{i}].text"))
    return "".join(parts)


def _messages(raw: Any) -> list[Message]:
    if raw is None:
        raise APIError(400, "Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    _check(raw, list, "messages")
    if not raw:
        raise APIError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1.", param="messages", code="empty_array")
    out: list[Message] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for tool messages without a name
    for i, item in enumerate(raw):
        p = f"messages[{i}]"
        _check(item, dict, p)
        role = item.get("role")
        if role is None:
            raise APIError(400, f"Missing required parameter: '{p}.role'.", param=f"{p}.role", code="missing_required_parameter")
        _check(role, str, f"{p}.role")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_text(item.get("content"), f"{p}.content")))
        elif role == "user":
            out.append(UserMessage(content=_text(item.get("content"), f"{p}.content")))
        elif role == "assistant":
            calls: list[ToolCall] = []
            raw_calls = item.get("tool_calls") or []
            _check(raw_calls, list, f"{p}.tool_calls")
            for j, call in enumerate(raw_calls):
                q = f"{p}.tool_calls[{j}]"
                _check(call, dict, q)
                function = _check(call.get("function"), dict, f"{q}.function")
                name = _check(function.get("name"), str, f"{q}.function.name")
                call_id = call.get("id") or new_call_id()
                _check(call_id, str, f"{q}.id")
                calls.append(tool_call_from_openai(name, function.get("arguments"), call_id))
                names[call_id] = name
            out.append(AssistantMessage(content=_text(item.get("content"), f"{p}.content"), tool_calls=calls))
        elif role in ("tool", "function"):
            call_id = item.get("tool_call_id")
            name = item.get("name")
            if role == "tool" and call_id is None:
                raise APIError(400, f"Missing required parameter: '{p}.tool_call_id'.", param=f"{p}.tool_call_id", code="missing_required_parameter")
            if call_id is None:  # legacy `function` role: answer the last call of that name
                call_id = next((cid for cid, n in reversed(names.items()) if n == name), new_call_id())
            _check(call_id, str, f"{p}.tool_call_id")
            name = name if isinstance(name, str) and name else names.get(call_id, "tool")
            out.append(ToolMessage(tool_call_id=call_id, name=name, content=_text(item.get("content"), f"{p}.content")))
        else:
            raise APIError(
                400,
                f"Invalid value: '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool' and 'function'.",
                param=f"{p}.role",
                code="invalid_value",
            )
    return out


def _tools(raw: Any, legacy: Any, choice: Any) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    if raw is None and legacy is not None:  # the old `functions` parameter
        raw = [{"type": "function", "function": f} for f in _check(legacy, list, "functions")]
    for i, item in enumerate(_check(raw, list, "tools") if raw is not None else []):
        p = f"tools[{i}]"
        _check(item, dict, p)
        if item.get("type", "function") != "function":
            raise APIError(400, f"Invalid value for '{p}.type': only 'function' tools are supported.", param=f"{p}.type", code="invalid_value")
        function = _check(item.get("function"), dict, f"{p}.function")
        name = _check(function.get("name"), str, f"{p}.function.name")
        if not name:
            raise APIError(400, f"Invalid '{p}.function.name': empty string.", param=f"{p}.function.name", code="invalid_value")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        _check(parameters, dict, f"{p}.function.parameters")
        description = _check(function.get("description") or "", str, f"{p}.function.description")
        specs.append(ToolSpec(name=name, description=description, parameters=parameters))
    if choice is None or choice in ("auto", "required"):
        return specs  # `required` cannot be forced on a free-running model; it is treated as `auto`
    if choice == "none":
        return []
    _check(choice, (str, dict), "tool_choice")
    if isinstance(choice, str):
        raise APIError(
            400, f"Invalid value for 'tool_choice': {choice!r}. Supported: 'none', 'auto', 'required' or a named function.",
            param="tool_choice", code="invalid_value",
        )
    name = (choice.get("function") or {}).get("name")
    chosen = [s for s in specs if s.name == name]
    if not chosen:
        raise APIError(400, f"Invalid value for 'tool_choice': no tool named {name!r} in 'tools'.", param="tool_choice", code="invalid_value")
    return chosen


@dataclass
class ChatRequest:
    model: str | None
    messages: list[Message]
    tools: list[ToolSpec]
    settings: GenerationSettings
    stream: bool
    include_usage: bool


def parse_chat_request(body: Any) -> ChatRequest:
    """Validate a `/v1/chat/completions` body the way OpenAI does; raise APIError (400) otherwise."""
    _check(body, dict, "body")
    model = body.get("model")
    if model is not None:
        _check(model, str, "model")
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"), body.get("functions"), body.get("tool_choice", body.get("function_call")))
    settings = GenerationSettings()
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        name = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
        if _check(max_tokens, int, name) < 1:
            raise APIError(400, f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {max_tokens} instead.", param=name, code="integer_below_min_value")
        settings.max_new_tokens = max_tokens
    for key, attr, low, high in (("temperature", "temperature", 0.0, 2.0), ("top_p", "top_p", 0.0, 1.0), ("repetition_penalty", "repetition_penalty", 0.0, 10.0)):
        value = body.get(key)
        if value is not None:
            _check(value, float, key)
            if not low <= value <= high:
                raise APIError(400, f"Invalid '{key}': expected a value between {low} and {high}, but got {value} instead.", param=key, code="invalid_value")
            setattr(settings, attr, float(value))
    if body.get("top_k") is not None:
        settings.top_k = max(0, _check(body["top_k"], int, "top_k"))
    if body.get("seed") is not None:
        settings.seed = _check(body["seed"], int, "seed")
    stop = body.get("stop")
    if stop is not None:
        _check(stop, (str, list), "stop")
        stops = [stop] if isinstance(stop, str) else [_check(s, str, f"stop[{i}]") for i, s in enumerate(stop)]
        settings.stop = [s for s in stops if s]
    n = body.get("n")
    if n is not None and _check(n, int, "n") != 1:
        raise APIError(400, "Invalid 'n': this server returns one choice per request (n=1).", param="n", code="invalid_value")
    if body.get("logprobs"):
        raise APIError(400, "'logprobs' is not supported by this server.", param="logprobs", code="unsupported_parameter")
    stream = body.get("stream") is not None and _check(body["stream"], bool, "stream")
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        include_usage = bool(_check(options, dict, "stream_options").get("include_usage"))
    return ChatRequest(model, messages, tools, settings, stream, include_usage)


# ---------------------------------------------------------------- the engine worker


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


class EngineWorker:
    """Runs `model.stream` on a private thread + event loop, one request at a time (FIFO).

    `stream()` is called from the HTTP loop; events cross over through a queue. Leaving the
    iteration early (a client that disconnected) cancels the generation, or its place in line.
    """

    def __init__(self, model: ChatModel):
        self.model = model
        self.pending = 0  # requests waiting or running (touched on the HTTP loop only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._gate: asyncio.Lock | None = None
        self._start = threading.Lock()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        with self._start:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="glm-agent-engine", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
        return self._loop

    async def _job(self, messages, tools, settings, put) -> None:
        if self._gate is None:
            self._gate = asyncio.Lock()  # created on the engine loop, used only there
        try:
            async with self._gate:
                events = self.model.stream(messages, tools, settings)
                try:
                    async for event in events:
                        put(event)
                finally:
                    closer = getattr(events, "aclose", None)
                    if closer is not None:
                        await closer()
        except BaseException as exc:  # noqa: BLE001 - handed to the HTTP side, which re-raises
            put(_Failed(exc))
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        else:
            put(_End())

    async def stream(
        self, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings
    ) -> AsyncIterator[ModelEvent]:
        engine_loop = self._ensure_started()
        http_loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: object) -> None:
            try:
                http_loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the HTTP loop is gone (server shut down)
                pass

        self.pending += 1
        future = asyncio.run_coroutine_threadsafe(self._job(messages, tools, settings, put), engine_loop)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, _End):
                    return
                if isinstance(item, _Failed):
                    if isinstance(item.error, asyncio.CancelledError):
                        raise ModelError("the generation was cancelled")
                    raise item.error
                yield item
        finally:
            self.pending -= 1
            future.cancel()  # no-op when finished; else cancels the task on the engine loop

    async def aclose(self, close_model: bool = False) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:  # generations still running at shutdown end here, not mid-air
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_cancel_all(), loop))
        if close_model:
            if loop is not None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.model.aclose(), loop))
            else:
                await self.model.aclose()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread = self._thread
            if thread is not None:
                await asyncio.to_thread(thread.join, 10)
            if not loop.is_running():
                loop.close()


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------- responses


def _openai_call(call: ToolCall) -> dict[str, Any]:
    if call.arguments_error and call.raw_arguments is not None:
        arguments = call.raw_arguments  # what the model wrote; the client sees the same error we would
    else:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _finish(done: ModelDone | None, calls: list[ToolCall]) -> str:
    if calls:
        return "tool_calls"
    reason = done.finish_reason if done else "stop"
    return reason if reason in ("stop", "length") else "stop"


def _usage(done: ModelDone | None) -> dict[str, int]:
    p, c = (done.prompt_tokens, done.completion_tokens) if done else (0, 0)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def create_app(
    model: ChatModel,
    model_name: str | None = None,
    *,
    max_pending: int = 64,
    close_model: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> Starlette:
    """The ASGI app serving `model` under `model_name` (default: `model.name`).

    `max_pending` requests may wait or run at once; more get 503 (clients retry).
    `close_model=True` closes the model on shutdown (the `serve` command owns its model).
    """
    served = model_name or getattr(model, "name", "glm-agent")
    known = {served, getattr(model, "name", served)}
    worker = EngineWorker(model)
    started = int(time.time())

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": "glm-agent"}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(served)]})

    async def get_model(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in known:
            return _unknown_model(name).response()
        return JSONResponse(model_card(served))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": served, "pending": worker.pending})

    async def chat(request: Request) -> Response:
        try:
            req = parse_chat_request(await _read_body(request, max_body_bytes))
            if req.model is not None and req.model not in known:
                raise _unknown_model(req.model)
            if worker.pending >= max_pending:
                raise APIError(503, f"The server has {worker.pending} requests in line; retry shortly.", type="server_error", code="server_overloaded")
        except APIError as exc:
            return exc.response()
        cid = "chatcmpl-" + secrets.token_hex(12)
        events = worker.stream(req.messages, req.tools, req.settings)
        if not req.stream:
            return await _complete(events, cid, served)
        # Wait for the first event before answering 200, so that errors before any output
        # (context overflow above all) still get their status code.
        try:
            first = await events.__anext__()
        except StopAsyncIteration:
            first = None
        except Exception as exc:  # noqa: BLE001
            return _model_error(exc).response()
        return StreamingResponse(
            _sse(first, events, cid, served, req.include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path}): this server has /v1/models and /v1/chat/completions."
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}."
        else:
            message = str(exc.detail)
        return APIError(exc.status_code, message, code=None).response()

    async def server_error(request: Request, exc: Exception) -> Response:
        return APIError(500, f"Internal server error: {type(exc).__name__}: {exc}", type="server_error").response()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        await worker.aclose(close_model=close_model)

    app = Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", get_model, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.model_name = served
    return app


def _unknown_model(name: str) -> APIError:
    return APIError(404, f"The model `{name}` does not exist or you do not have access to it.", param="model", code="model_not_found")


async def _read_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body of {declared} bytes exceeds the {limit}-byte limit.", code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"Request body exceeds the {limit}-byte limit.", code="request_too_large")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(
            400,
            f"We could not parse the JSON body of your request ({exc}). The body must be a JSON object; "
            "check quoting and escapes, and send Content-Type: application/json.",
            code="invalid_json",
        ) from None


async def _complete(events: AsyncIterator[ModelEvent], cid: str, served: str) -> Response:
    text: list[str] = []
    calls: list[ToolCall] = []
    done: ModelDone | None = None
    try:
        async for event in events:
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCallReady):
                calls.append(event.call)
            elif isinstance(event, ModelDone):
                done = event
    except Exception as exc:  # noqa: BLE001
        return _model_error(exc).response()
    content = "".join(text)
    message: dict[str, Any] = {"role": "assistant", "content": content if (content or not calls) else None}
    if calls:
        message["tool_calls"] = [_openai_call(c) for c in calls]
    return JSONResponse(
        {
            "id": cid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": served,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _finish(done, calls)}],
            "usage": _usage(done),
        }
    )


async def _sse(
    first: ModelEvent | None, events: AsyncIterator[ModelEvent], cid: str, served: str, include_usage: bool
) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict | None = None) -> str:
        body: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": served}
        body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        if include_usage:
            body["usage"] = usage
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    calls: list[ToolCall] = []
    done: ModelDone | None = None

    async def all_events() -> AsyncIterator[ModelEvent]:
        if first is not None:
            yield first
        async for event in events:
            yield event

    yield chunk({"role": "assistant", "content": ""})
    try:
        async for event in all_events():
            if isinstance(event, TextDelta):
                if event.text:
                    yield chunk({"content": event.text})
            elif isinstance(event, ToolCallReady):
                index = len(calls)
                calls.append(event.call)
                # OpenAI's shape: id + name first, then the arguments as a separate delta.
                body = _openai_call(event.call)
                yield chunk({"tool_calls": [{"index": index, "id": body["id"], "type": "function", "function": {"name": body["function"]["name"], "arguments": ""}}]})
                yield chunk({"tool_calls": [{"index": index, "function": {"arguments": body["function"]["arguments"]}}]})
            elif isinstance(event, ModelDone):
                done = event
    except Exception as exc:  # noqa: BLE001 - headers are sent: the error travels as an SSE event
        yield f"data: {json.dumps(_model_error(exc).body(), ensure_ascii=False)}\n\n"
        return
    finally:
        await events.aclose()
    yield chunk({}, _finish(done, calls))
    if include_usage:
        yield chunk(None, usage=_usage(done))
    yield "data: [DONE]\n\n"


def run_server(model: ChatModel, model_name: str | None = None, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (the `glm-agent serve` command)."""
    import uvicorn

    app = create_app(model, model_name, close_model=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn on a background thread; yield its base URL (`http://host:port/v1`).

    Port 0 picks a free port. The server stops (lifespan shutdown included) when the block exits.
    """
    import socket

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="glm-agent-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
