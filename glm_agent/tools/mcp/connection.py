"""One MCP server, held open by the official SDK's `Client`: started, listed, called, watched
for tool-list changes, restarted after a crash or a hang (within a budget), stopped.

Everything here runs in the group's loop thread (`thread.py`). Each start is one runner
task that enters the SDK's `Client` and leaves it when told to stop, so the connection's
task groups are entered and left by the same task. Failures never escape as exceptions of
the SDK: they become `MCPServerError`s whose message is written for the model ("the `files`
MCP server is not responding ...").
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from typing import Any, Callable

from glm_agent.core.errors import GlmAgentError
from glm_agent.tools.mcp.config import MCPServerConfig
from glm_agent.tools.mcp.guard import guarded_argv

__all__ = ["ServerConnection", "MCPServerError", "MCPUnavailableError", "client_version", "require_sdk"]

_PROBE_TIMEOUT = 5.0  # after a call timed out: does the server still answer at all?
_STOP_TIMEOUT = 10.0  # the SDK's own shutdown: stdin closed, 2 s, SIGTERM, 2 s, SIGKILL
_STDERR_LINES = 20
_METHOD_NOT_FOUND = -32601  # JSON-RPC


class MCPServerError(GlmAgentError, RuntimeError):
    """An MCP server did not start, stopped, hangs or answered with an error; the message
    says which server and what happened."""


class MCPUnavailableError(GlmAgentError, ImportError):
    """The `mcp` package (the official MCP SDK) is not installed."""


def require_sdk() -> None:
    from importlib.util import find_spec

    if find_spec("mcp") is None:
        raise MCPUnavailableError('MCP support needs the official MCP SDK: pip install "glm-agent[mcp]"')


def client_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("glm-agent")
    except PackageNotFoundError:
        return "0"


def _describe_exception(exc: BaseException) -> str:
    """The first real error inside anyio's exception groups, as one line."""
    while getattr(exc, "exceptions", None):  # an (anyio) exception group
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    text = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {text}" if text and name not in text else (text or name)


class _StderrTail:
    """The last lines a stdio server wrote to stderr, read from a pipe into memory (bounded)."""

    def __init__(self) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._partial = b""
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        self.writer = os.fdopen(self._write_fd, "w", closefd=False)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._read_fd, self._read)
        self._open = True

    def spawned(self) -> None:
        """The child holds its copy of the write end now: drop ours, so that EOF can come."""
        if self._write_fd >= 0:
            self.writer.close()
            os.close(self._write_fd)
            self._write_fd = -1

    def _read(self) -> None:
        try:
            data = os.read(self._read_fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        *lines, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-4096:]
        for line in lines:
            text = line.decode("utf-8", "replace").strip()
            if text:
                self.lines.append(text[:500])

    def close(self) -> None:
        if self._open:
            self._open = False
            self._loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self.spawned()

    def tail(self, lines: int = 3) -> str:
        if self._partial.strip():
            self.lines.append(self._partial.decode("utf-8", "replace").strip()[:500])
            self._partial = b""
        return " | ".join(list(self.lines)[-lines:])


def _program_files(argv: list[str], cwd: str | None) -> tuple[list[str], tuple[str, ...]]:
    """The files the user's command names after the program (the server's own script), as
    absolute paths.

    A sandboxed server sees the interpreter and the workspace only; these files (given by the
    user, never by a model) are bound read-only at the same place so the server can start.
    Only the files: a script's folder may be the user's home. Not resolved through links: a
    venv's python is a link whose target would lose the venv."""
    out, files = argv[:1], []
    for arg in argv[1:]:
        path = os.path.join(cwd or os.getcwd(), arg)
        if not arg.startswith("-") and os.path.isfile(path):
            arg = os.path.abspath(path)
            files.append(arg)
        out.append(arg)
    return out, tuple(files)


class ServerConnection:
    """One server. `start`, `call` and `stop` are coroutines of the group's loop thread."""

    def __init__(
        self,
        config: MCPServerConfig,
        *,
        workspace: Callable[[], Any] | None = None,
        sandbox_config: Any = None,
        startup_timeout: float = 30.0,
        max_restarts: int = 3,
        on_tools_changed: Callable[["ServerConnection"], None] | None = None,
    ):
        self.config = config
        self.name = config.name or config.guessed_name()
        self.workspace = workspace
        self.sandbox_config = sandbox_config
        self.startup_timeout = startup_timeout
        self.max_restarts = max_restarts
        self.on_tools_changed = on_tools_changed
        self.tools: list[Any] = []  # the server's mcp.types.Tool list, as last listed
        self.reported_name: str | None = None
        self.protocol_version: str | None = None
        self.state = "stopped"  # running, stopped (restarts on the next call), failed (no more), closed
        self.problem: str | None = None
        self.starts = 0
        self._client: Any = None
        self._runner: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._stderr: _StderrTail | None = None
        self._sandbox: Any = None
        self._background: set[asyncio.Task[Any]] = set()

    # ---- description ---------------------------------------------------------------------

    @property
    def what(self) -> str:
        return f"the `{self.name}` MCP server"

    def _stderr_note(self) -> str:
        tail = self._stderr.tail() if self._stderr is not None else ""
        return f" (its last output: {tail})" if tail else ""

    def origin(self) -> str:
        """Where its tools come from, for /tools: transport and rights."""
        if self.config.url:
            return f"MCP server `{self.name}` at {self.config.url}"
        rights = "sandboxed: workspace only, no network" if self.config.sandbox else "runs with your user's rights"
        return f"MCP server `{self.name}` (stdio, {rights})"

    # ---- start ---------------------------------------------------------------------------

    async def start(self) -> list[Any]:
        """Connect (starting the process for stdio) and list the tools, or MCPServerError."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is not None:
                return self.tools
            if self.state == "closed":
                raise MCPServerError(f"{self.what} was closed with its agent")
            if self.starts > self.max_restarts:
                self.state = "failed"
                raise MCPServerError(
                    f"{self.what} failed {self.starts} times and is not restarted again in this session "
                    f"(last problem: {self.problem or 'unknown'}). Answer without it.")
            self.starts += 1
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[tuple[Any, list[Any]]] = loop.create_future()
            self._stop = asyncio.Event()
            self._runner = asyncio.create_task(self._run(ready, self._stop), name=f"mcp-{self.name}")
            try:
                self._client, self.tools = await asyncio.wait_for(asyncio.shield(ready), self.startup_timeout)
            except asyncio.TimeoutError:
                await self._halt()
                self.problem = f"it did not answer within {self.startup_timeout:g} s of starting{self._stderr_note()}"
                self.state = "stopped"
                raise MCPServerError(f"{self.what} ({self.config.describe()}): {self.problem}") from None
            except MCPServerError as exc:
                await self._halt()
                self.problem = str(exc)
                self.state = "stopped"
                raise MCPServerError(f"{self.what} ({self.config.describe()}) did not start: {exc}") from None
            except BaseException:
                await self._halt()
                raise
            self.state, self.problem = "running", None
            return self.tools

    def _stdio_target(self) -> Any:
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        argv, env, cwd = self.config.argv, dict(self.config.env), self.config.cwd
        if self.config.sandbox:
            argv, env, cwd = self._sandboxed(argv, env)
        argv = guarded_argv(argv)
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = _StderrTail()
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=env or None, cwd=cwd)
        return stdio_client(params, errlog=self._stderr.writer)

    def _sandboxed(self, argv: list[str], env: dict[str, str]) -> tuple[list[str], dict[str, str], str]:
        from glm_agent.sandbox import Sandbox, SandboxConfig, SandboxError

        argv, scripts = _program_files(argv, self.config.cwd)
        try:
            if self._sandbox is None:
                if self.workspace is None:
                    raise MCPServerError("a sandboxed MCP server needs a workspace folder")
                config = self.sandbox_config or SandboxConfig()
                config = config.with_(ro_binds=(*config.ro_binds, *scripts))
                self._sandbox = Sandbox(config, workspace=self.workspace())
            return self._sandbox.command(argv, env)
        except SandboxError as exc:
            raise MCPServerError(f"the sandbox is not available: {exc}") from None

    def _http_target(self, stack: contextlib.AsyncExitStack) -> Any:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        http = httpx2.AsyncClient(headers=dict(self.config.headers) or None, timeout=httpx2.Timeout(30.0, read=300.0))
        stack.push_async_callback(http.aclose)
        return streamable_http_client(self.config.url, http_client=http)

    async def _run(self, ready: asyncio.Future[tuple[Any, list[Any]]], stop: asyncio.Event) -> None:
        from mcp import Client
        from mcp.types import Implementation

        try:
            async with contextlib.AsyncExitStack() as stack:
                target = self._stdio_target() if self.config.command else self._http_target(stack)
                try:
                    client = await stack.enter_async_context(Client(
                        target, cache=None, message_handler=self._on_message,
                        client_info=Implementation(name="glm-agent", version=client_version()),
                    ))
                finally:
                    if self._stderr is not None:
                        self._stderr.spawned()
                info = client.server_info
                self.reported_name = info.name if info is not None else None
                self.protocol_version = client.protocol_version
                tools = await self._list(client)
                subscription = await self._subscribe(client, stack)
                ready.set_result((client, tools))
                if subscription is not None:
                    self._spawn(self._watch(client, subscription))
                await stop.wait()
        except asyncio.CancelledError:
            if not ready.done():
                ready.set_exception(MCPServerError("its start was cancelled"))
            raise
        except BaseException as exc:  # the SDK's errors come wrapped in anyio exception groups
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            why = exc if isinstance(exc, MCPServerError) else MCPServerError(_describe_exception(exc))
            if not ready.done():
                ready.set_exception(MCPServerError(f"{why}{self._stderr_note()}"))
            elif self._client is not None and self.state == "running":
                self.problem = f"the connection failed: {why}{self._stderr_note()}"
                self.state = "stopped"
        finally:
            for task in list(self._background):
                task.cancel()
            if self._runner is asyncio.current_task():
                self._client = None

    async def _list(self, client: Any) -> list[Any]:
        from pydantic import ValidationError

        tools: list[Any] = []
        cursor = None
        try:
            for _ in range(100):  # a server whose pages never end cannot hang the start
                page = await client.list_tools(cursor=cursor)
                tools += page.tools
                cursor = page.next_cursor
                if not cursor:
                    break
        except ValidationError as exc:
            raise MCPServerError(f"its tool list does not follow the MCP schema ({exc.error_count()} problems, "
                                 f"first: {_describe_exception(exc)[:300]})") from None
        except Exception as exc:
            if getattr(exc, "code", None) == _METHOD_NOT_FOUND:
                return []  # a server without tools (only prompts or resources)
            raise
        return tools

    # ---- tool-list changes ---------------------------------------------------------------

    async def _subscribe(self, client: Any, stack: contextlib.AsyncExitStack) -> Any:
        """A 2026-era connection announces tool-list changes on a `subscriptions/listen`
        stream (older ones send notifications, see `_on_message`)."""
        from mcp_types.version import MODERN_PROTOCOL_VERSIONS

        tools = getattr(client.server_capabilities, "tools", None)
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS or not getattr(tools, "list_changed", False):
            return None
        import anyio

        try:  # entered by this task (not wait_for's): it also leaves it
            with anyio.fail_after(10):
                return await stack.enter_async_context(client.listen(tools_list_changed=True))
        except Exception:  # a server may refuse to be watched: its tools then stay as listed
            return None

    async def _watch(self, client: Any, subscription: Any) -> None:
        with contextlib.suppress(Exception):
            async for _event in subscription:
                await self._relist(client)

    async def _on_message(self, message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed" and self._client is not None:
            # Not awaited here: the answer to the new tools/list arrives through this same handler's loop.
            self._spawn(self._relist(self._client))

    async def _relist(self, client: Any) -> None:
        try:
            tools = await asyncio.wait_for(self._list(client), self.startup_timeout)
        except Exception:
            return  # the next call finds out whether the server is still there
        if client is self._client:
            self.tools = tools
            if self.on_tools_changed is not None:
                self.on_tools_changed(self)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- calls ---------------------------------------------------------------------------

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float) -> tuple[Any, bool]:
        """(the server's CallToolResult, whether the server was restarted for this call), or
        MCPServerError saying what went wrong."""
        from mcp import MCPError
        from mcp.types import CONNECTION_CLOSED, REQUEST_TIMEOUT
        from pydantic import ValidationError

        restarted = self.starts > 0 and self._client is None
        try:
            await self.start()
        except MCPServerError as exc:
            raise MCPServerError(f"{exc}" if self.state == "failed" else f"{self.what} is not available: {exc}") from None
        client = self._client
        note = " (it was restarted: anything it kept in memory is gone)" if restarted else ""
        try:
            result = await asyncio.wait_for(
                client.call_tool(tool, arguments, read_timeout_seconds=timeout), timeout + _PROBE_TIMEOUT)
            return result, restarted
        except MCPError as exc:
            if exc.code == CONNECTION_CLOSED:
                raise await self._lost(f"stopped during the call to `{tool}`") from None
            if exc.code != REQUEST_TIMEOUT:
                raise MCPServerError(f"{self.what} answered the call to `{tool}` with an error: "
                                     f"{exc.message or exc.code}{note}") from None
        except asyncio.TimeoutError:
            pass
        except ValidationError as exc:
            raise MCPServerError(f"{self.what} sent an answer that does not follow the MCP schema: "
                                 f"{_describe_exception(exc)[:300]}") from None
        except Exception as exc:  # the transport itself failed (an HTTP server went away ...)
            raise await self._lost(f"could not be reached ({_describe_exception(exc)[:200]})") from None
        # The call timed out: a slow tool, or a server that no longer answers anything?
        if await self._responds(client):
            raise MCPServerError(f"`{tool}` did not finish within {timeout:g} s and was cancelled; {self.what} "
                                 "is still running. Try something smaller, or answer without it.")
        raise await self._lost(f"is not responding (no answer within {timeout:g} s)")

    async def _responds(self, client: Any) -> bool:
        try:
            await asyncio.wait_for(client.list_tools(), _PROBE_TIMEOUT)
        except Exception:
            return False
        return True

    async def _lost(self, what: str) -> MCPServerError:
        """Stop a server that crashed or hangs; the next call starts it again."""
        note = self._stderr_note()
        await self._halt()
        self.problem = f"{what}{note}"
        left = self.max_restarts - self.starts + 1
        again = ("it will be restarted on the next call" if left > 0
                 else "it is not restarted again in this session")
        if self.state != "closed":
            self.state = "stopped" if left > 0 else "failed"
        return MCPServerError(f"{self.what} {what}{note}; {again}.")

    # ---- stop ----------------------------------------------------------------------------

    async def _halt(self) -> None:
        """End the current runner: the SDK closes stdin, then terminates the process group."""
        runner, stop = self._runner, self._stop
        self._client, self._runner, self._stop = None, None, None
        if stop is not None:
            stop.set()
        if runner is not None and not runner.done():
            try:
                await asyncio.wait_for(asyncio.shield(runner), _STOP_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                runner.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(runner, _STOP_TIMEOUT)
            except BaseException:
                pass
        if self._stderr is not None:
            self._stderr.close()
        if self._sandbox is not None:
            self._sandbox.kill_all()

    async def stop(self) -> None:
        """Close for good (the agent is closing)."""
        self.state = "closed"
        await self._halt()
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
