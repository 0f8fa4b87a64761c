"""The engine worker: runs generations off the HTTP loop, batched when the model batches.

The model runs on a private thread with its own event loop (a long CPU generation must not stall
the HTTP side, which keeps answering `/v1/models`, validation errors and queued clients). Events
cross over through a queue. A model that batches concurrent streams itself (`batches = True`:
`LocalModel`, whose scheduler decodes every request in one batch) gets every request at once;
any other model runs one generation at a time, in arrival order.
Leaving a stream early (a client that went away) cancels its generation, or its place in line,
at once; `stop()` does that for every generation when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass
from typing import AsyncIterator

from glm_agent.core.contracts import ChatModel, GenerationSettings, ToolSpec
from glm_agent.core.errors import ModelError
from glm_agent.core.events import ModelEvent
from glm_agent.core.messages import Message
from glm_agent.serve.errors import WorkerClosed

__all__ = ["EngineWorker"]


class _End:
    pass


@dataclass
class _Failed:
    error: BaseException


class EngineWorker:
    """`stream()` is called on the HTTP loop; the generation runs on the engine loop (FIFO)."""

    def __init__(self, model: ChatModel):
        self.model = model
        self.pending = 0  # requests waiting or running (touched on the HTTP loop only)
        self.closing = False
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
        if self._gate is None:  # created on the engine loop, used only there
            # A model that batches takes every request at once (no gate).
            self._gate = contextlib.nullcontext() if getattr(self.model, "batches", False) else asyncio.Lock()
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
        except BaseException as exc:  # noqa: BLE001 - handed to the HTTP side, which raises it there
            put(_Failed(exc))
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        else:
            put(_End())

    async def stream(
        self, messages: list[Message], tools: list[ToolSpec], settings: GenerationSettings
    ) -> AsyncIterator[ModelEvent]:
        """The model's events for one request, after those ahead of it in line."""
        if self.closing:
            raise WorkerClosed("the server is shutting down")
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
                        if self.closing:
                            raise WorkerClosed("the server is shutting down")
                        raise ModelError("the generation was cancelled")
                    raise item.error
                yield item
        finally:
            self.pending -= 1
            future.cancel()  # no-op when finished; else cancels the job on the engine loop

    async def stop(self) -> None:
        """Refuse new generations and cancel every running or queued one (shutdown)."""
        self.closing = True
        loop = self._loop
        if loop is not None and loop.is_running():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(_cancel_all(), loop))

    async def aclose(self, close_model: bool = False) -> None:
        await self.stop()
        loop, self._loop = self._loop, None
        if close_model:
            if loop is not None:
                await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.model.aclose(), loop))
            else:
                await self.model.aclose()
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                await asyncio.to_thread(self._thread.join, 10)
            if not loop.is_running():
                loop.close()


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
