"""An MCP `CallToolResult` as a glm-agent `ToolResult`.

Text blocks become the observation. Images (and audio, and binary resources) are written
to the session workspace and attached for the user, while the model reads
`[Image saved: mcp-image-1.png]`. The workspace belongs to the model's sandboxed code, so
every write goes through `Workspace` (no planted link is followed). Long text is cut in the
middle for the model and kept whole in `full_output`.
"""

from __future__ import annotations

import base64
import binascii
import json
import mimetypes
from pathlib import Path
from typing import Any, Callable

from glm_agent.core.messages import Attachment, ToolResult
from glm_agent.core.terminal import safe_text
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.quota import Quota
from glm_agent.sandbox.text import truncate_middle
from glm_agent.sandbox.workspace import Workspace, WorkspaceError

__all__ = ["to_tool_result", "MAX_FILE_BYTES"]

MAX_FILE_BYTES = 32 * 1024 * 1024  # one image, sound or file a server sends
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
               "image/svg+xml": "svg", "audio/wav": "wav", "audio/x-wav": "wav", "audio/mpeg": "mp3",
               "audio/ogg": "ogg", "application/pdf": "pdf"}
_NOUN = {"image": "Image", "audio": "Audio"}


def _extension(mime: str) -> str:
    if mime in _EXTENSIONS:
        return _EXTENSIONS[mime]
    guess = mimetypes.guess_extension(mime or "") or ".bin"
    return guess.lstrip(".")[:8] or "bin"


class _Files:
    """Writes a call's files into the workspace; the folder is asked for only when needed."""

    def __init__(self, workspace: Callable[[], Path], server: str):
        self._workspace = workspace
        self._files: Workspace | None = None
        self.server = server
        self.attachments: list[Attachment] = []

    def save(self, kind: str, data: Any, mime: str, what: str) -> str:
        """Decode base64 `data`, write it; the line the model reads about it."""
        noun = _NOUN.get(kind, "File")
        try:
            raw = base64.b64decode(data, validate=False) if isinstance(data, str) else bytes(data)
        except (binascii.Error, ValueError, TypeError):
            return f"[{noun} not saved: the server sent data that is not base64]"
        if len(raw) > MAX_FILE_BYTES:
            return f"[{noun} not saved: {len(raw):,} bytes is over the {MAX_FILE_BYTES // 2**20} MiB limit]"
        try:
            if self._files is None:
                self._files = Workspace(self._workspace(), quota=Quota.from_config(SandboxConfig()))
            path, _ = self._files.create_numbered(f"mcp-{kind}", _extension(mime), raw)
        except WorkspaceError as exc:
            return f"[{noun} not saved: {exc}]"
        except OSError as exc:
            return f"[{noun} not saved: {exc.strerror or exc}]"
        self.attachments.append(Attachment(path=str(path), mime=mime or "application/octet-stream",
                                           description=f"{what} (MCP server {self.server})"))
        return f"[{noun} saved: {path.name}]"


def _block_text(block: Any, files: _Files, what: str) -> str:
    kind = getattr(block, "type", "")
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return files.save(kind, block.data, block.mime_type or "", what)
    if kind == "resource_link":
        label = block.title or block.name
        about = f": {block.description}" if block.description else ""
        return f"[Resource {label} <{block.uri}>{about}]"
    if kind == "resource":
        resource = block.resource
        text = getattr(resource, "text", None)
        if text is not None:
            return f"[Resource <{resource.uri}>]\n{text}"
        blob = getattr(resource, "blob", None)
        mime = resource.mime_type or "application/octet-stream"
        kind = mime.partition("/")[0] if mime.startswith(("image/", "audio/")) else "file"
        return f"[Resource <{resource.uri}>] " + files.save(kind, blob or "", mime, what)
    return f"[{kind or 'unknown'} content, not shown]"


def to_tool_result(result: Any, *, server: str, tool: str, workspace: Callable[[], Path],
                   max_chars: int = 10_000, note: str = "") -> ToolResult:
    """The observation for one MCP call's result. `note` is appended (a restart, for one)."""
    files = _Files(workspace, server)
    what = f"{tool} output"
    parts = [_block_text(block, files, what) for block in result.content or []]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, indent=1))
    text = "\n".join(p for p in parts if p) or ("(the tool reported an error without a message)"
                                                if result.is_error else "(no output)")
    text = safe_text(text)  # a stranger's text: no terminal controls reach the chat or a log
    if result.is_error and not text.lower().startswith("error"):
        text = f"Error: {text}"
    if note:
        text += f"\n\n[{note}]"
    content, cut = truncate_middle(text, max_chars)
    data: dict[str, Any] = {"server": server, "tool": tool}
    if result.structured_content is not None:
        data["structured"] = result.structured_content
    return ToolResult(content=content, attachments=files.attachments, is_error=bool(result.is_error),
                      full_output=text if cut else None, data=data)
