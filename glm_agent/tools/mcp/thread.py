"""The event loop the MCP connections live in, on a thread of its own.

The SDK's connections are anyio task groups: they must be entered and left by one task, in
one loop. Tool calls, though, come from whatever loop runs the agent (`asyncio.run` in the
CLI, a private loop in `Agent.run_sync`, a test's loop), and the CLI lists the tools before
any loop runs. One loop thread per group of servers serves them all; callers wait on it
with `call` (from a coroutine) or `call_sync`. Cancelling the caller cancels the work.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from typing import Any, Awaitable, Coroutine, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running in a daemon thread until `stop()`."""

    def __init__(self, name: str = "glm-agent-mcp"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self._cancel_leftovers()
            self.loop.close()

    def _cancel_leftovers(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def in_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def submit(self, coro: Coroutine[Any, Any, T]) -> "concurrent.futures.Future[T]":
        if not self.alive:
            coro.close()
            raise RuntimeError("the MCP connections are closed")
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` in the thread's loop and wait for it from the caller's loop."""
        if self.in_thread():
            return await coro
        future: Awaitable[T] = asyncio.wrap_future(self.submit(coro))
        return await future

    def call_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` in the thread's loop and block until it is done (not from that loop)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            self.loop.call_soon_threadsafe(self.loop.stop)
        if not self.in_thread():
            self._thread.join(timeout)
