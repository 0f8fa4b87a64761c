"""The ASGI app of `glm-agent serve`: routes, request bodies, answers, error bodies.

`POST /v1/chat/completions` (streamed or not, `tools` or the legacy `functions` in, calls out),
`GET /v1/models`, `GET /v1/models/{id}`, `GET /health`. Bodies are validated by `validation`,
answers written by `openai_wire`, generations run by the `EngineWorker`. Text deltas are
forwarded as the model produces them, tools or not; only the model's own parser decides what
is a tool call (the GLM basic_demo server buffered whole answers whenever tools were attached).

A client that goes away stops its generation at once, streamed or not, and leaves the line if
it was still waiting: nobody queues behind an answer nobody will read. Errors use OpenAI's
body, so the official clients raise their usual exceptions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Any, AsyncIterator, Awaitable, Callable, Collection

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from glm_agent.core.contracts import ChatModel
from glm_agent.core.errors import ModelError
from glm_agent.core.events import ModelDone, ModelEvent, TextDelta, ToolCallReady
from glm_agent.core.messages import ToolCall
from glm_agent.models.openai_wire import SSE_DONE, AnswerWriter, sse_event
from glm_agent.serve.access import LOOPBACK_HOSTS, AccessGuard
from glm_agent.serve.errors import APIError, WorkerClosed, generation_error, unknown_model
from glm_agent.serve.validation import read_chat_request
from glm_agent.serve.worker import EngineWorker

__all__ = ["create_app", "MAX_BODY_BYTES"]

MAX_BODY_BYTES = 8 << 20
log = logging.getLogger("glm_agent.serve")


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers or None)


def _failure(exc: BaseException) -> APIError:
    """`generation_error`, logging the traceback of what can only be a bug (not a ModelError)."""
    if not isinstance(exc, (ModelError, WorkerClosed)):
        log.error("generation failed", exc_info=exc)
    return generation_error(exc)


# ---------------------------------------------------------------- request bodies and disconnects


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body (None if the client left while sending it); APIError for a wrong type or size."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise APIError(
            415, f"Content-Type must be application/json, not {media_type or 'missing'!r}.",
            param="Content-Type", code="unsupported_media_type",
        )
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"Request body of {declared} bytes exceeds the {limit}-byte limit.", code="request_too_large")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise APIError(413, f"Request body exceeds the {limit}-byte limit.", code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        return None
    return b"".join(chunks)


async def _disconnected(receive: Callable[[], Awaitable[dict]]) -> None:
    """Returns once the client has gone (the body is read by then, so nothing else can arrive)."""
    while (await receive())["type"] != "http.disconnect":
        pass


_GONE: Any = object()  # what `_unless_disconnected` returns when the client left first


async def _unless_disconnected(request: Request, work: Awaitable[Any]) -> Any:
    """`work`'s result, or _GONE once the client disconnects (then `work` is cancelled and awaited)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    await asyncio.wait({task})  # its cleanup (closing the worker stream) runs before we move on
    for ended in (task, watch):
        if ended.done() and not ended.cancelled():
            ended.exception()  # retrieved: the client is gone, there is nobody to tell
    log.info("client disconnected; its generation was stopped")
    return _GONE


class _EventStream(StreamingResponse):
    """Closes its event iterator however the response ends: a disconnect stops the generation at once."""

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


# ---------------------------------------------------------------- answers


async def _whole_answer(events: AsyncIterator[ModelEvent], writer: AnswerWriter) -> Response:
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
    except Exception as exc:  # noqa: BLE001 - every failure is answered with an error body
        return error_response(_failure(exc))
    return JSONResponse(writer.completion("".join(text), calls, done))


async def _first(events: AsyncIterator[ModelEvent]) -> ModelEvent | None:
    try:
        return await events.__anext__()
    except StopAsyncIteration:
        return None


async def _sse(first: ModelEvent | None, events: AsyncIterator[ModelEvent], writer: AnswerWriter) -> AsyncIterator[str]:
    calls: list[ToolCall] = []
    done: ModelDone | None = None

    async def all_events() -> AsyncIterator[ModelEvent]:
        if first is not None:
            yield first
        async for event in events:
            yield event

    yield sse_event(writer.opening_chunk())
    try:
        async for event in all_events():
            if isinstance(event, TextDelta):
                if event.text:
                    yield sse_event(writer.text_chunk(event.text))
            elif isinstance(event, ToolCallReady):
                for chunk in writer.call_chunks(len(calls), event.call):
                    yield sse_event(chunk)
                calls.append(event.call)
            elif isinstance(event, ModelDone):
                done = event
    except Exception as exc:  # noqa: BLE001 - headers are sent: the error travels as an SSE event
        yield sse_event(_failure(exc).body())
        return
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    for chunk in writer.closing_chunks(done, calls):
        yield sse_event(chunk)
    yield SSE_DONE


# ---------------------------------------------------------------- the app


def create_app(
    model: ChatModel,
    model_name: str | None = None,
    *,
    max_pending: int = 64,
    close_model: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    api_key: str | None = None,
    allowed_hosts: Collection[str] | None = LOOPBACK_HOSTS,
    aliases: Collection[str] = (),
) -> Starlette:
    """The ASGI app serving `model` under `model_name` (default: `model.name`).

    Requests may also name the model by `model.name` or any of `aliases` (the `serve` command
    passes the spec's other names: `glm-agent serve` answers "embedded" and "local:embedded");
    `/v1/models` lists `model_name` alone.

    `max_pending` requests may wait or run at once; more get 503 (clients retry).
    `close_model=True` closes the model on shutdown (the `serve` command owns its model).
    `api_key`: every request must send `Authorization: Bearer KEY`. `allowed_hosts`: the Host
    names accepted (loopback by default; None accepts any, for a server exposed on purpose).
    """
    served = model_name or getattr(model, "name", "glm-agent")
    known = {served, getattr(model, "name", served), *aliases}
    worker = EngineWorker(model)
    started = int(time.time())

    def model_card(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": started, "owned_by": "glm-agent"}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [model_card(served)]})

    async def get_model(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in known:
            return error_response(unknown_model(name))
        return JSONResponse(model_card(served))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": served, "pending": worker.pending})

    async def chat(request: Request) -> Response:
        try:
            raw = await _read_body(request, max_body_bytes)
            if raw is None:
                return Response(status_code=499)  # the client left mid-body: nobody reads this
            req = read_chat_request(raw)
            if req.model is not None and req.model not in known:
                raise unknown_model(req.model)
            if worker.closing:
                raise generation_error(WorkerClosed())
            if worker.pending >= max_pending:
                raise APIError(
                    503, f"The server has {worker.pending} requests in line; retry shortly.",
                    type="server_error", code="server_overloaded",
                )
        except APIError as exc:
            return error_response(exc)
        writer = AnswerWriter(
            id="chatcmpl-" + secrets.token_hex(12), model=served, created=int(time.time()),
            legacy=req.legacy, include_usage=req.include_usage,
        )
        events = worker.stream(req.messages, req.tools, req.settings)
        if not req.stream:
            answer = await _unless_disconnected(request, _whole_answer(events, writer))
            return Response(status_code=499) if answer is _GONE else answer
        # Wait for the first event before answering 200, so that errors before any output
        # (context overflow above all) still get their status code.
        try:
            first = await _unless_disconnected(request, _first(events))
        except Exception as exc:  # noqa: BLE001
            return error_response(_failure(exc))
        if first is _GONE:
            return Response(status_code=499)
        return _EventStream(
            _sse(first, events, writer),
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
        return error_response(APIError(exc.status_code, message))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error_response(APIError(500, f"Internal server error: {type(exc).__name__}: {exc}", type="server_error"))

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
        middleware=[Middleware(AccessGuard, api_key=api_key, allowed_hosts=allowed_hosts)],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.worker = worker
    app.state.model_name = served
    return app
