"""Which MCP servers to start: `--mcp` strings, argv lists, and `mcp.json` files.

A server is a command to run (stdio) or a streamable-HTTP URL. The config file uses the
`mcpServers` layout other MCP clients read:

    {"mcpServers": {
        "files": {"command": "python", "args": ["-m", "files_server"], "env": {"ROOT": "/srv"}},
        "search": {"url": "http://127.0.0.1:8000/mcp", "headers": {"Authorization": "Bearer ..."}}
    }}

Keys other clients add (`alwaysAllow`, `autoApprove` ...) are ignored; an entry with
`"disabled": true` is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from glm_agent.core.errors import GlmAgentError

__all__ = ["MCPServerConfig", "MCPConfigError", "ServerSpec", "parse_server", "load_config", "server_configs",
           "safe_name", "DEFAULT_CALL_TIMEOUT"]

DEFAULT_CALL_TIMEOUT = 120.0
_NAMED = re.compile(r"([A-Za-z0-9][A-Za-z0-9_.-]*)=(\S.*)", re.S)
_URL = re.compile(r"https?://", re.I)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_HTTP_TYPES = {"http", "streamable-http", "streamable_http", "streamablehttp"}


class MCPConfigError(GlmAgentError, ValueError):
    """An MCP server description that cannot be used; the message says what to change."""


def safe_name(text: str, limit: int = 64) -> str:
    """`text` as a tool or server name models accept: letters, digits, `_` and `-`."""
    return _UNSAFE.sub("_", text).strip("_")[:limit]


@dataclass(frozen=True)
class MCPServerConfig:
    """One MCP server: a command (stdio) or a URL (streamable HTTP).

    `name` names the server in tool prefixes and messages; None takes the name the server
    reports, else one made from the command or URL. `timeout` bounds one tool call (seconds).
    `sandbox` runs a stdio server inside glm-agent's sandbox (workspace only, no network).
    """

    name: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_CALL_TIMEOUT
    sandbox: bool = False
    source: str = ""  # where it was described (a config file), for messages

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        if bool(self.command) == bool(self.url):
            raise MCPConfigError(f"{where}an MCP server needs either a command or a url (not both)")
        if self.url and not _URL.match(self.url):
            raise MCPConfigError(f"{where}MCP server url {self.url!r} must start with http:// or https://")
        if self.name is not None and not safe_name(self.name):
            raise MCPConfigError(f"{where}MCP server name {self.name!r} has no letters or digits")
        if not self.timeout or self.timeout <= 0:
            raise MCPConfigError(f"{where}MCP server timeout must be a positive number of seconds")
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def transport(self) -> str:
        return "stdio" if self.command else "http"

    @property
    def argv(self) -> list[str]:
        return [self.command, *self.args] if self.command else []

    def describe(self) -> str:
        """The command line or the URL, for messages."""
        return shlex.join(self.argv) if self.command else str(self.url)

    def guessed_name(self) -> str:
        """A name from the command (`python -m files_server` -> files_server) or the URL."""
        if self.url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.url)
            return safe_name(parts.hostname or "server") or "server"
        words = self.argv
        if "-m" in words[:-1]:
            guess = words[words.index("-m") + 1].rpartition(".")[2]
        else:
            plain = [w for w in words[1:] if not w.startswith("-")]
            guess = Path(plain[-1] if plain else words[0]).stem
        return safe_name(guess) or "server"

    def with_(self, **changes: Any) -> "MCPServerConfig":
        return replace(self, **changes)


ServerSpec = Union[str, Sequence[str], Mapping[str, Any], MCPServerConfig]


def parse_server(spec: ServerSpec, *, name: str | None = None, source: str = "") -> MCPServerConfig:
    """One server from a string (`"python -m srv"`, `"http://127.0.0.1:8000/mcp"`, either as
    `"NAME=..."`), an argv list, an `mcpServers` entry, or a config (returned as it is)."""
    if isinstance(spec, MCPServerConfig):
        return spec if name is None else spec.with_(name=name)
    if isinstance(spec, str):
        text = spec.strip()
        named = _NAMED.fullmatch(text)
        if named and not _URL.match(text):
            name, text = name or named.group(1), named.group(2).strip()
        if not text:
            raise MCPConfigError("an empty MCP server: give a command (\"python -m server\") or an http(s) URL")
        if _URL.match(text):
            return MCPServerConfig(name=name, url=text, source=source)
        try:
            argv = shlex.split(text)
        except ValueError as exc:
            raise MCPConfigError(f"cannot read the MCP server command {text!r}: {exc}") from None
        return MCPServerConfig(name=name, command=argv[0], args=tuple(argv[1:]), source=source)
    if isinstance(spec, Mapping):
        return _from_entry(name, spec, source)
    if isinstance(spec, Sequence) and spec and all(isinstance(a, str) for a in spec):
        return MCPServerConfig(name=name, command=spec[0], args=tuple(spec[1:]), source=source)
    raise MCPConfigError(f"cannot use {spec!r} as an MCP server: give a command string, an argv list, or a URL")


def _string_list(value: Any, what: str, where: str) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise MCPConfigError(f"{where}: `{what}` must be a list of strings")


def _string_map(value: Any, what: str, where: str) -> dict[str, str]:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return dict(value)
    raise MCPConfigError(f"{where}: `{what}` must be an object that maps names to strings")


def _from_entry(name: str | None, entry: Mapping[str, Any], source: str) -> MCPServerConfig:
    where = f"{source}: server {name!r}" if source else f"MCP server {name or ''}".rstrip()
    kind = str(entry.get("type") or entry.get("transport") or "").lower()
    if kind == "sse":
        raise MCPConfigError(f"{where}: the SSE transport is not supported; use the server's streamable HTTP "
                             "endpoint (usually .../mcp) with \"url\"")
    if kind and kind != "stdio" and kind not in _HTTP_TYPES:
        raise MCPConfigError(f"{where}: unknown type {kind!r}; use \"stdio\" (command) or \"http\" (url)")
    command, url = entry.get("command"), entry.get("url")
    if command is not None and not (isinstance(command, str) and command.strip()):
        raise MCPConfigError(f"{where}: `command` must be a non-empty string")
    if url is not None and not isinstance(url, str):
        raise MCPConfigError(f"{where}: `url` must be a string")
    timeout = entry.get("timeout", DEFAULT_CALL_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise MCPConfigError(f"{where}: `timeout` must be a positive number of seconds")
    cwd = entry.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise MCPConfigError(f"{where}: `cwd` must be a string")
    return MCPServerConfig(
        name=name,
        command=command,
        args=_string_list(entry.get("args", []), "args", where),
        env=_string_map(entry.get("env", {}), "env", where),
        cwd=os.path.expanduser(cwd) if cwd else None,
        url=url,
        headers=_string_map(entry.get("headers", {}), "headers", where),
        timeout=float(timeout),
        sandbox=bool(entry.get("sandbox", False)),
        source=where,
    )


def load_config(path: str | os.PathLike[str]) -> list[MCPServerConfig]:
    """The servers of an `mcpServers` file (a missing file: none), disabled ones left out."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MCPConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise MCPConfigError(f"{path} is not valid JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        raise MCPConfigError(f'{path} needs an object "mcpServers" that maps names to servers '
                             '({"mcpServers": {"files": {"command": "...", "args": [...]}}})')
    configs = []
    for name, entry in servers.items():
        if not isinstance(entry, dict):
            raise MCPConfigError(f"{path}: server {name!r} must be an object with a command or a url")
        if entry.get("disabled") is True:
            continue
        configs.append(_from_entry(name, entry, str(path)))
    return configs


def server_configs(specs: Iterable[ServerSpec], *, sandbox: bool = False) -> list[MCPServerConfig]:
    """Configs for `--mcp` values: each a server, or the path of an `mcpServers` JSON file.
    `sandbox` sandboxes every stdio server."""
    configs: list[MCPServerConfig] = []
    for spec in specs:
        if isinstance(spec, (str, os.PathLike)) and str(spec).endswith(".json") and Path(spec).expanduser().is_file():
            configs += load_config(spec)
        else:
            configs.append(parse_server(spec))
    if sandbox:
        configs = [c.with_(sandbox=True) if c.command else c for c in configs]
    return configs
