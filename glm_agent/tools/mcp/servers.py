"""`MCPServers`: a group of MCP servers whose tools an agent uses; `mcp_tools` in one call.

    tools = await mcp_tools("python -m files_server", "http://127.0.0.1:8000/mcp")
    agent = Agent(model, tools=tools)          # agent.aclose() stops the servers

    async with MCPServers("python -m files_server") as servers:
        agent = Agent(model, tools=servers.tools)
        servers.attach(agent)                  # tools the server adds later reach the agent too

The connections live in a loop thread of the group's own (`thread.py`), so the tools work
from any event loop, and the CLI can list them before its loop starts (`start_sync`). A
failing server never raises into the agent: its calls return error observations.
"""

from __future__ import annotations

import asyncio
import json
import threading
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, MutableMapping

from glm_agent.core.contracts import ToolContext
from glm_agent.core.messages import ToolResult
from glm_agent.core.terminal import safe_text
from glm_agent.tools.mcp.config import MCPServerConfig, ServerSpec, parse_server, safe_name
from glm_agent.tools.mcp.connection import MCPServerError, ServerConnection, require_sdk
from glm_agent.tools.mcp.results import to_tool_result
from glm_agent.tools.mcp.thread import LoopThread
from glm_agent.tools.mcp.tool import MCPTool

__all__ = ["MCPServers", "mcp_tools", "schema_problem"]

_RESTART_NOTE = "the server had stopped and was restarted for this call: anything it kept in memory is gone"


def schema_problem(schema: Any) -> str | None:
    """Why `schema` cannot be a tool's input schema (None: it can)."""
    if not isinstance(schema, dict):
        return "its inputSchema is not a JSON object"
    if schema.get("type", "object") != "object":
        return f"its inputSchema has type {schema.get('type')!r}, but tool arguments are an object"
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        return f"its inputSchema is not valid JSON Schema ({exc.message}{f' at {where}' if where else ''})"
    return None


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    params = json.loads(json.dumps(schema))  # our own copy: the server's object may change
    params.setdefault("type", "object")
    params.setdefault("properties", {})
    return params


async def _stop_all(connections: list[ServerConnection]) -> None:
    await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)


def _finalize(thread: LoopThread | None, connections: list[ServerConnection]) -> None:
    """A group dropped without aclose() (or left open at exit) still stops its servers."""
    if thread is None or not thread.alive:
        return
    try:
        thread.call_sync(_stop_all(connections), timeout=15)
    except BaseException:  # noqa: BLE001 - best effort; the guard kills orphans anyway
        pass
    thread.stop(timeout=2)


class MCPServers:
    """MCP servers as a source of tools: started together, closed together.

    Each positional argument is one server: a command string (`"python -m srv"`), an
    `http(s)://.../mcp` URL, `"NAME=..."` for either, an argv list, an `mcpServers` entry
    (dict), or an `MCPServerConfig`.

    `reserved` are tool names already taken (an MCP tool with such a name is prefixed with its
    server's name, as are tools that two servers share). `sandbox=True` runs every stdio
    server inside glm-agent's sandbox, in `workspace` (a folder, or a function returning it).
    A server that crashes or hangs is restarted on the next call, `max_restarts` times.
    """

    def __init__(
        self,
        *servers: ServerSpec,
        reserved: Iterable[str] = (),
        workspace: str | Path | Callable[[], Path] | None = None,
        sandbox: bool = False,
        sandbox_config: Any = None,
        startup_timeout: float = 30.0,
        max_restarts: int = 3,
        max_output_chars: int = 10_000,
    ):
        configs = [parse_server(s) for s in servers]
        if sandbox:
            configs = [c.with_(sandbox=True) if c.command else c for c in configs]
        self.configs: list[MCPServerConfig] = configs
        self.reserved = set(reserved)
        self.startup_timeout = startup_timeout
        self.max_output_chars = max_output_chars
        self.tools: list[MCPTool] = []
        self.skipped: list[str] = []  # tools left out, and why (an invalid schema ...)
        self.closed = False
        folder = workspace
        self._workspace: Callable[[], Path] | None = (
            folder if callable(folder) else (lambda: Path(folder)) if folder is not None else None)  # type: ignore[arg-type,misc]
        self._connections = [
            ServerConnection(c, workspace=self._workspace, sandbox_config=sandbox_config,
                             startup_timeout=startup_timeout, max_restarts=max_restarts,
                             on_tools_changed=self._tools_changed)
            for c in configs
        ]
        self._thread: LoopThread | None = None
        self._lock = threading.Lock()
        self._tables: list[MutableMapping[str, Any]] = []
        self._user_loop: asyncio.AbstractEventLoop | None = None
        self._finalizer: weakref.finalize | None = None

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> list[MCPTool]:
        """Start every server and list its tools; MCPServerError (all servers stopped again)
        if one does not start."""
        self._remember_loop()
        return await self._ensure_thread().call(self._start_all())

    def start_sync(self) -> list[MCPTool]:
        """`start` for code without a running event loop (the CLI, before its loop starts)."""
        try:
            return self._ensure_thread().call_sync(self._start_all())
        except BaseException:
            self.close()
            raise

    async def __aenter__(self) -> "MCPServers":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every server (stdio processes end); later calls return an error."""
        if self._begin_close():
            try:
                await self._thread.call(_stop_all(self._connections))  # type: ignore[union-attr]
            finally:
                self._end_close()

    def close(self) -> None:
        """Blocking `aclose`."""
        if self._begin_close():
            try:
                self._thread.call_sync(_stop_all(self._connections), timeout=60)  # type: ignore[union-attr]
            finally:
                self._end_close()

    def _begin_close(self) -> bool:
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        if self._finalizer is not None:
            self._finalizer.detach()
        return self._thread is not None and self._thread.alive

    def _end_close(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def _ensure_thread(self) -> LoopThread:
        if self.closed:
            raise MCPServerError("these MCP servers were closed; make a new MCPServers to start them again")
        require_sdk()
        if self._thread is None:
            self._thread = LoopThread()
            self._finalizer = weakref.finalize(self, _finalize, self._thread, self._connections)
        return self._thread

    async def _start_all(self) -> list[MCPTool]:
        results = await asyncio.gather(*(c.start() for c in self._connections), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await _stop_all(self._connections)
            for failure in failures:
                if not isinstance(failure, Exception):
                    raise failure
            raise MCPServerError("; ".join(str(f) for f in failures))
        self._name_servers()
        self._refresh()
        return list(self.tools)

    def _name_servers(self) -> None:
        taken: set[str] = set()
        for conn in self._connections:
            name = conn.config.name or safe_name(conn.reported_name or "") or conn.config.guessed_name()
            base, n = name, 2
            while name in taken:
                name, n = f"{base}_{n}", n + 1
            taken.add(name)
            conn.name = name

    # ---- tools ---------------------------------------------------------------------------

    def _tools_changed(self, _conn: ServerConnection) -> None:
        if not self.closed:
            self._refresh()

    def _refresh(self) -> None:
        """Rebuild the tool list from what the servers list now: existing tools keep their
        names (the conversation refers to them) and take new descriptions and schemas; new
        tools are named, prefixed on a clash; tools no longer listed are withdrawn."""
        with self._lock:
            existing = {(t.server, t.mcp_name): t for t in self.tools}
            listed: list[tuple[ServerConnection, Any]] = []
            skipped: list[str] = []
            for conn in self._connections:
                for entry in conn.tools:
                    problem = schema_problem(entry.input_schema)
                    if problem is None and not safe_name(entry.name):
                        problem = "its name has no letters or digits"
                    if problem:
                        skipped.append(f"`{safe_text(entry.name)[:80]}` of the `{conn.name}` MCP server: {problem}")
                    else:
                        listed.append((conn, entry))
            kept = {(conn.name, entry.name) for conn, entry in listed} & set(existing)
            taken = self.reserved | {existing[key].name for key in kept}
            bases: dict[str, int] = {}
            for conn, entry in listed:
                if (conn.name, entry.name) not in existing:
                    bases[safe_name(entry.name)] = bases.get(safe_name(entry.name), 0) + 1
            tools: list[MCPTool] = []
            added: list[MCPTool] = []
            for conn, entry in listed:
                key = (conn.name, entry.name)
                # A stranger's text: shown in /tools and sent to the model, so no terminal controls.
                description = safe_text(entry.description or entry.title
                                        or f"The `{entry.name}` tool of the `{conn.name}` MCP server.")
                if key in existing:
                    tool = existing[key]
                    tool.description, tool.parameters = description, _parameters(entry.input_schema)
                else:
                    tool = MCPTool(self, server=conn.name, mcp_name=entry.name,
                                   name=self._free_name(conn.name, entry.name, taken, bases),
                                   description=description, parameters=_parameters(entry.input_schema),
                                   timeout=conn.config.timeout + self.startup_timeout + 30)
                    taken.add(tool.name)
                    added.append(tool)
                tools.append(tool)
            removed = [t for key, t in existing.items() if key not in kept]
            for tool in removed:
                tool.available = False
            self.tools, self.skipped = tools, skipped
        if added or removed:
            self._update_tables(added, removed)

    @staticmethod
    def _free_name(server: str, tool: str, taken: set[str], bases: dict[str, int]) -> str:
        base = safe_name(tool)
        if base not in taken and bases.get(base, 0) <= 1:
            return base
        name = safe_name(f"{server}_{tool}")
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name[:60]}_{n}", n + 1
        return candidate

    def attach(self, target: Any) -> None:
        """Keep `target`'s tool table (an Agent, or a dict of tools) in step with the servers:
        tools they add later are added, tools they withdraw are removed. An MCP tool whose
        name the target already uses for its own tool is prefixed with its server's name (on
        the first attach; later, before any model saw the old name, it would be left out)."""
        table = target if isinstance(target, MutableMapping) else getattr(target, "tools", None)
        if not isinstance(table, MutableMapping):
            raise TypeError("attach() takes an Agent (or any object with a `tools` dict) or a dict of tools")
        self._remember_loop()
        with self._lock:
            own = {name for name, tool in table.items() if not isinstance(tool, MCPTool)}
            self.reserved |= own
            if not self._tables:  # no agent has seen these names yet: free to rename
                taken = self.reserved | {t.name for t in self.tools}
                for tool in self.tools:
                    if tool.name in own:
                        tool.name = self._free_name(tool.server, tool.mcp_name, taken, {})
                        taken.add(tool.name)
            self._tables.append(table)
            current = list(self.tools)
        for tool in current:
            table.setdefault(tool.name, tool)

    def _update_tables(self, added: list[MCPTool], removed: list[MCPTool]) -> None:
        def apply() -> None:
            for table in self._tables:
                for tool in removed:
                    if table.get(tool.name) is tool:
                        del table[tool.name]
                for tool in added:
                    table.setdefault(tool.name, tool)

        # The agent reads its table in its own loop: change it there, between two steps.
        loop = self._user_loop
        if loop is not None and not loop.is_closed() and loop.is_running():
            loop.call_soon_threadsafe(apply)
        else:
            apply()

    def _remember_loop(self) -> None:
        try:
            self._user_loop = asyncio.get_running_loop()
        except RuntimeError:
            pass

    # ---- calls ---------------------------------------------------------------------------

    async def call(self, tool: MCPTool, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call `tool` on its server; every failure is an error observation."""
        if not tool.available:
            return ToolResult(content=f"Error: the `{tool.server}` MCP server no longer offers `{tool.name}`.",
                              is_error=True)
        if self.closed or self._thread is None:
            return ToolResult(content=f"Error: the `{tool.server}` MCP server was closed with its agent.",
                              is_error=True)
        self._remember_loop()
        conn = next(c for c in self._connections if c.name == tool.server)
        try:
            result, restarted = await self._thread.call(conn.call(tool.mcp_name, arguments, conn.config.timeout))
        except MCPServerError as exc:  # may quote the server's own words (its stderr, its error)
            return ToolResult(content=f"Error: {safe_text(exc)}", is_error=True)
        except RuntimeError as exc:  # the loop thread is gone: closed meanwhile
            return ToolResult(content=f"Error: the `{tool.server}` MCP server is closed ({exc}).", is_error=True)
        return to_tool_result(result, server=tool.server, tool=tool.name, workspace=lambda: ctx.workspace,
                              max_chars=self.max_output_chars, note=_RESTART_NOTE if restarted else "")

    # ---- description ---------------------------------------------------------------------

    def origin(self, server: str) -> str:
        conn = next((c for c in self._connections if c.name == server), None)
        return conn.origin() if conn is not None else f"MCP server `{server}`"

    def describe(self) -> list[dict[str, Any]]:
        """Per server: name, where it runs, state, its tools' names, and the last problem."""
        with self._lock:
            tools = list(self.tools)
        return [{"name": c.name, "origin": c.origin(), "state": "closed" if self.closed else c.state,
                 "tools": [t.name for t in tools if t.server == c.name], "problem": c.problem}
                for c in self._connections]


async def mcp_tools(*servers: ServerSpec, **options: Any) -> list[MCPTool]:
    """Start MCP servers and return their tools; closing the tools (the agent's `aclose()`)
    stops the servers. Options as for `MCPServers`."""
    group = MCPServers(*servers, **options)
    tools = await group.start()
    if not tools:
        await group.aclose()  # nothing would ever close it
    return tools
