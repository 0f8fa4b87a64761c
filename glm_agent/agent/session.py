"""Session files: what `Agent.save` writes and `Agent.load` reads back.

A session file is untrusted data: it may come from someone else. So reading one never picks
a folder (a session's workspace is the one the program gave the agent, or
`<home>/sessions/<id>` with `id` checked against a conservative pattern), and the whole file
is validated before the agent changes; each problem is one line naming the file and the field.
Writes are atomic (temp file + rename). Temp files carry the writer's pid, so a later save of
the same file removes those a killed writer left behind.

Chats save themselves as `<home>/sessions/<name>.json`, beside the `<home>/sessions/<id>/`
workspaces (outside them: sandboxed code can write its workspace, never these files);
`list_sessions` reads them back for `glm-agent sessions` and `chat --continue`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic_core
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from glm_agent.core.errors import GlmAgentError
from glm_agent.core.messages import Message
from glm_agent.core.terminal import safe_text

__all__ = [
    "SESSION_FORMAT",
    "SessionFile",
    "SessionFileError",
    "SessionSummary",
    "check_session_id",
    "default_home",
    "list_sessions",
    "read_session_file",
    "sessions_root",
    "write_session_file",
]

SESSION_FORMAT = 1
MAX_SESSION_BYTES = 64 << 20
# Letters, digits, '.', '_', '-'; starts with a letter or digit; no '..': one plain folder name.
_SESSION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_ROLES = ("system", "user", "assistant", "tool")
# A temp file left by a writer that was not this code's pid-carrying kind (older versions)
# is only removed once it is clearly abandoned.
_LEGACY_TEMP_AGE = 3600.0


class SessionFileError(GlmAgentError, ValueError):
    """A saved session file that cannot be read back; the message names the file and the field."""


def default_home() -> Path:
    """glm-agent's own folder: $GLM_AGENT_HOME, else ~/.glm-agent."""
    return Path(os.environ.get("GLM_AGENT_HOME") or Path.home() / ".glm-agent")


def sessions_root() -> Path:
    """Where sessions without an explicit workspace keep their files: one folder per id."""
    return default_home() / "sessions"


def session_id_problem(value: object) -> str | None:
    """Why `value` cannot be a session id (it names a folder), or None."""
    if not isinstance(value, str):
        return f"must be a string, not {type(value).__name__}"
    if not _SESSION_ID_RE.fullmatch(value) or ".." in value:
        return "must be 1-128 letters, digits, '.', '_' or '-', start with a letter or digit, and hold no '..'"
    return None


def check_session_id(value: object) -> str:
    """`value` if it is a valid session id; ValueError otherwise."""
    problem = session_id_problem(value)
    if problem:
        raise ValueError(f"invalid session id {safe_text(repr(value))[:80]}: it {problem}")
    return value  # type: ignore[return-value]


class SessionFile(BaseModel):
    """The JSON object a session file holds (validated strictly: no coercion, no extra fields)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    format: int
    session_id: str | None = None
    model: str | None = None
    tools: list[str] = []
    system: str | None = None
    workspace: str | None = None
    messages: list[Message]

    @field_validator("session_id")
    @classmethod
    def _valid_id(cls, value: str | None) -> str | None:
        problem = None if value is None else session_id_problem(value)
        if problem:
            raise ValueError(f"it {problem}")
        return value


# ---- reading ---------------------------------------------------------------------------------


def _field(loc: tuple[Any, ...]) -> str:
    parts = list(loc)
    if len(parts) > 2 and parts[0] == "messages" and parts[2] in _ROLES:
        del parts[2]  # the union's tag: messages[3].content reads better than messages[3].user.content
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return safe_text(out)[:120] or "(top level)"


def _validation_message(path: Path, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    message = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    message = safe_text(message.removeprefix("Value error, "))  # it may quote the file's text
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{path}: field '{_field(first['loc'])}': {message}{more}"


def _read_bytes(path: Path) -> bytes:
    try:
        # O_NONBLOCK: a FIFO named as a session file must not hang the program on open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SessionFileError(f"no session file at {path}") from None
    except IsADirectoryError:
        raise SessionFileError(f"{path} is a directory, not a session file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise SessionFileError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, pipe or socket"
        raise SessionFileError(f"{path} is {kind}, not a session file")
    with os.fdopen(fd, "rb") as f:
        try:
            data = f.read(MAX_SESSION_BYTES + 1)
        except OSError as exc:
            raise SessionFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SESSION_BYTES:
        raise SessionFileError(f"{path} is larger than {MAX_SESSION_BYTES >> 20} MiB, too large for a session file")
    return data


def read_session_file(path: str | Path) -> SessionFile:
    """Read and validate a whole session file; SessionFileError (one line) on any problem."""
    path = Path(path)
    data = _read_bytes(path)
    not_session = f"{path} is not a glm-agent session file"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SessionFileError(f"{not_session}: not UTF-8 text (bad byte at offset {exc.start})") from None
    try:
        # pydantic's parser: no Python recursion, and a depth limit for absurdly nested input.
        raw = pydantic_core.from_json(text)
    except ValueError as exc:
        reason = str(exc).replace("recursion limit exceeded", "nested too deeply")
        raise SessionFileError(f"{not_session}: invalid JSON ({safe_text(reason)})") from None
    if not isinstance(raw, dict):
        kind = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(raw), "null")
        raise SessionFileError(f"{not_session}: its top level is a JSON {kind}, not an object")
    fmt = raw.get("format")
    if "format" not in raw:
        raise SessionFileError(f"{not_session}: field 'format' is missing")
    if type(fmt) is not int or fmt != SESSION_FORMAT:
        shown = safe_text(repr(fmt))[:40]
        raise SessionFileError(
            f"{path}: unsupported session format {shown} (this version reads format {SESSION_FORMAT})")
    try:
        return SessionFile.model_validate(raw, strict=True)
    except ValidationError as exc:
        raise SessionFileError(_validation_message(path, exc)) from None


# ---- writing ---------------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is someone else's
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove `.NAME.<pid>.<random>.tmp` files next to `path` whose writer is dead (and old
    pid-less ones from earlier versions); returns what was removed. Best effort."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.tmp")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if not match:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            pid = match.group(1)
            if pid:
                stale = not _pid_alive(int(pid))
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > _LEGACY_TEMP_AGE
            if stale:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except (OSError, ValueError):
            continue
    return removed


def write_session_file(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` as JSON to `path` atomically: a crash never leaves half a file.

    OSError (with the path) when the place cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "it is a directory", str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file stands where a folder is needed
        raise NotADirectoryError(errno.ENOTDIR, f"{path.parent} is not a folder", str(path)) from None
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- the saved chats -------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSummary:
    """One saved session file, as `glm-agent sessions` lists it."""

    path: Path
    modified: float  # the file's mtime: when the conversation last changed
    session_id: str | None
    model: str | None
    messages: int
    first_prompt: str  # "" when the conversation has no user message
    last_prompt: str


def _summary(path: Path, modified: float) -> SessionSummary:
    session = read_session_file(path)
    prompts = [m.content for m in session.messages if m.role == "user"]
    return SessionSummary(
        path=path, modified=modified, session_id=session.session_id, model=session.model,
        messages=len(session.messages), first_prompt=prompts[0] if prompts else "",
        last_prompt=prompts[-1] if prompts else "",
    )


def list_sessions(root: Path | None = None) -> tuple[list[SessionSummary], list[Path]]:
    """The session files directly in `root` (default: the sessions root), newest first, and
    the files there that are not readable sessions. Links and temp files are skipped; each
    file is validated whole, as `read_session_file` does."""
    root = sessions_root() if root is None else Path(root)
    try:
        entries = list(os.scandir(root))
    except OSError:  # no sessions yet
        return [], []
    found: list[SessionSummary] = []
    broken: list[Path] = []
    for entry in entries:
        if not entry.name.endswith(".json") or entry.name.startswith("."):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            modified = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        try:
            found.append(_summary(Path(entry.path), modified))
        except SessionFileError:
            broken.append(Path(entry.path))
    found.sort(key=lambda s: (s.modified, s.path.name), reverse=True)
    return found, sorted(broken)
