"""The `python` tool (GLM-4 All Tools): code runs in the session's sandboxed Jupyter kernel.

State persists between calls; every output comes back in order; images are written to
the workspace and attached for the user while the model sees `[Image saved: name.png]`;
long output is cut in the middle for the model and kept whole in `full_output`.
Failures of the code (tracebacks, timeouts, crashes) are ordinary observations: the model
is told what happened, including when the kernel had to be restarted and state was lost.
"""

from __future__ import annotations

import base64
import json
import re
import textwrap
import threading
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import Attachment, ToolResult
from glm_agent.sandbox.config import SandboxConfig
from glm_agent.sandbox.quota import Quota
from glm_agent.sandbox.text import collapse_cr, truncate_middle
from glm_agent.sandbox.workspace import Workspace, WorkspaceError

__all__ = ["PythonTool", "clean_code"]

# Tokens that leak into a raw body when a model runs past its turn.
_LEAKED = re.compile(
    r"<\|(?:observation|assistant|user|system|endoftext|im_start|im_end|eot_id|end_of_text|"
    r"begin_of_text|start_header_id|end_header_id)\|>(?:python\b)?"
)
_FENCE = re.compile(r"^[ \t]*```[ \t]*([A-Za-z0-9_+-]*)[ \t]*$", re.M)

_IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/svg+xml": "svg"}


def clean_code(code: str) -> str:
    """The code a model meant: leaked special tokens removed, Markdown fences unwrapped,
    a JSON `{"code": ...}` body unpacked, common indentation removed."""
    code = _LEAKED.sub("", code)
    stripped = code.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("code"), str):
            code = obj["code"]
    fences = list(_FENCE.finditer(code))
    if fences:
        blocks: list[str] = []
        i = 0
        while i < len(fences):
            start = fences[i].end()
            end = fences[i + 1].start() if i + 1 < len(fences) else len(code)
            lang = fences[i].group(1).lower()
            if lang in ("", "python", "py", "python3", "ipython", "ipython3"):
                blocks.append(textwrap.dedent(code[start:end].strip("\n")))
            i += 2
        code = "\n\n".join(b for b in blocks if b.strip())
    return textwrap.dedent(code).strip("\n")


def _describe(box: SandboxConfig, timeout: float) -> str:
    where = "the working directory" if box.unsafe_no_sandbox else f"{box.workspace_mount} (the working directory)"
    text = (
        "Run Python code in a stateful Jupyter notebook environment and return its output "
        "(stdout, stderr, results, tracebacks). Variables and imports persist between calls. "
        f"Execution is stopped after {timeout:g} seconds. Files in {where} persist; matplotlib "
        "figures are saved there automatically."
    )
    if not box.network and not box.unsafe_no_sandbox:
        text += " There is no internet access: do not make network requests."
    return text


class PythonTool(Tool):
    """Run Python in a stateful, sandboxed Jupyter kernel (one per tool instance)."""

    name = "python"  # GLM-4's `python` built-in: the glm4 dialect sends its raw body as `code`
    description = (
        "Run Python code in a stateful Jupyter notebook environment and return its output "
        "(stdout, stderr, results, tracebacks). Variables and imports persist between calls. "
        "Execution is stopped after 60 seconds. Files in /mnt/data (the working directory) "
        "persist; matplotlib figures are saved there automatically. There is no internet "
        "access: do not make network requests."
    )
    parameters = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": "Python code to run."}},
        "required": ["code"],
    }

    def __init__(
        self,
        sandbox: SandboxConfig | None = None,
        timeout: float = 60.0,
        max_output_chars: int = 6000,
        *,
        startup_code: str | None = None,
        interrupt_grace: float = 3.0,
        max_images: int = 10,
        unsafe_no_sandbox: bool = False,
    ):
        self.sandbox = sandbox or SandboxConfig()
        if unsafe_no_sandbox:  # the CLI's --unsafe-no-sandbox
            self.sandbox = self.sandbox.with_(unsafe_no_sandbox=True)
        self.exec_timeout = float(timeout)
        self.max_output_chars = max_output_chars
        self.startup_code = startup_code
        self.interrupt_grace = interrupt_grace
        self.max_images = max_images
        # The agent's own deadline must leave room for interrupt + restart.
        self.timeout = self.exec_timeout + interrupt_grace + 60.0
        self.description = _describe(self.sandbox, self.exec_timeout)
        self._session: Any = None
        self._lock = threading.Lock()
        self._image_counter = 0

    # -- session ---------------------------------------------------------------------

    def session(self, workspace: str | Path) -> Any:
        """The kernel session, created (not yet started) on first use."""
        with self._lock:
            if self._session is None:
                from glm_agent.sandbox.kernel import KernelSession

                self._session = KernelSession(
                    workspace, self.sandbox, startup_code=self.startup_code,
                    interrupt_grace=self.interrupt_grace,
                )
            return self._session

    async def aclose(self) -> None:
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            await session.shutdown()

    # -- call ------------------------------------------------------------------------

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        from glm_agent.sandbox.errors import SandboxError

        code = arguments.get("code")
        if not isinstance(code, str):
            return ToolResult(content='Error: `python` needs the code to run as a string: {"code": "..."}.',
                              is_error=True)
        code = clean_code(code)
        if not code.strip():
            return ToolResult(content="Error: no Python code was given.", is_error=True)
        try:
            session = self.session(ctx.workspace)
            result = await session.execute(code, timeout=self.exec_timeout)
        except SandboxError as exc:
            return ToolResult(content=f"Error: the Python sandbox is not available: {exc}", is_error=True)
        return self._observation(result, session.workspace)

    def _observation(self, result: Any, workspace: Path) -> ToolResult:
        parts: list[str] = []
        attachments: list[Attachment] = []
        # Every write goes through Workspace: the code controls the folder (planted links).
        files = Workspace(workspace, quota=Quota.from_config(self.sandbox))
        for out in result.outputs:
            images = [(mime, out.data[mime]) for mime in _IMAGE_TYPES if mime in out.data]
            if images and len(attachments) < self.max_images:
                mime, payload = images[0]
                try:
                    path = self._save_image(files, mime, payload)
                except WorkspaceError as exc:
                    parts.append(f"[Image not saved: {exc}]\n")
                    continue
                if path is not None:
                    attachments.append(Attachment(path=str(path), mime=mime, description="python output"))
                    parts.append(f"[Image saved: {path.name}]\n")
                    continue
            if out.kind in ("stdout", "stderr"):
                parts.append(collapse_cr(out.text))
            elif out.text:
                parts.append(out.text if out.text.endswith("\n") else out.text + "\n")
        text = "".join(parts).rstrip("\n")
        if result.notice:
            text = (text + "\n\n" if text else "") + f"[{result.notice}]"
        if not text:
            text = "(no output)"
        content, cut = truncate_middle(text, self.max_output_chars)
        return ToolResult(
            content=content,
            attachments=attachments,
            full_output=text if (cut or result.dropped_chars) else None,
            data={
                "status": result.status,
                "restarted": result.restarted,
                "execution_count": result.execution_count,
                "duration": round(result.duration, 4),
            },
        )

    def _save_image(self, files: Workspace, mime: str, payload: Any) -> Path | None:
        ext = _IMAGE_TYPES[mime]
        try:
            raw = payload.encode() if ext == "svg" else base64.b64decode(payload)
        except (ValueError, TypeError, AttributeError):
            return None
        limit = self.sandbox.file_size_limit_mb
        if limit and len(raw) > limit * 1024 * 1024:
            raise WorkspaceError(f"the image is {len(raw):,} bytes, over the {limit} MiB file-size limit")
        path, self._image_counter = files.create_numbered("image", ext, raw, start=self._image_counter + 1)
        return path
