"""The `cogview` tool: text-to-image for the agent, with a local diffusers or a CogView API backend.

GLM-4 knows this tool by its built-in name `cogview`: in the glm4 dialect the model writes
`cogview\n<english prompt>` and the raw body arrives as `arguments["prompt"]`; in the other
dialects it sends JSON `{prompt, size?, steps?, seed?}`. The picture goes to the session
workspace as a PNG (so the python tool can open it too) and to the user as an attachment;
the model gets one short sentence, as in GLM-4's own demo, never pixels.
"""

from __future__ import annotations

import io
import os
import secrets
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import Attachment, ToolResult
from glm_agent.sandbox.workspace import Workspace
from glm_agent.tools.image.backend import (
    GeneratedImage,
    ImageBackend,
    ImageGenerationError,
    ImageRequest,
    parse_size,
)

__all__ = ["ImageTool", "BACKENDS", "MAX_STEPS", "MAX_PROMPT_CHARS"]

BACKENDS = ("diffusers", "cogview")
BACKEND_ENV = "GLM_AGENT_IMAGE_BACKEND"
MAX_STEPS = 200
MAX_PROMPT_CHARS = 4000
METADATA = "cogview_result"

_DESCRIPTION = (
    "Generate an image from a text description and show it to the user. Use it when the user "
    "asks for a picture, drawing, photo or illustration. Write the prompt in English, about "
    "50-100 words, describing subject, style, composition and lighting. The user sees the "
    "image; you only get a confirmation with the file name."
)
# The description when the backend cannot work at all: the model must not promise pictures.
_UNAVAILABLE = (
    "Image generation is NOT available in this session: {reason}. Do not call this tool and "
    "do not promise the user a picture; tell them that image generation is not set up."
)


class ImageTool(Tool):
    """Text-to-image. `ImageTool()` uses diffusers with `$GLM_AGENT_IMAGE_MODEL`.

    `unavailable` is why the backend cannot work at all (no model configured, no API key), or
    None; the description then tells the model so.

    Args:
        backend: "diffusers" (default, or `$GLM_AGENT_IMAGE_BACKEND`), "cogview", or a backend object.
        model: diffusers: a pipeline folder or hub id; cogview: the API model name.
        device, dtype, variant: diffusers placement and precision ("auto" picks CUDA+fp16 when present).
        steps: default denoising steps; size: default size such as "512x512"; guidance: default CFG scale.
        api_key, base_url, transport, http_retries, backoff, request_timeout: cogview API client
            options (http_retries: extra attempts after 429/5xx or a connection failure).
        timeout: seconds one call may take before the agent gives up on it.
    """

    name = "cogview"  # GLM-4's `cogview` built-in: the glm4 dialect sends its raw body as `prompt`
    description = _DESCRIPTION
    parameters = {
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "What to draw, in English (50-100 words)."},
            "size": {"type": "string", "description": "WIDTHxHEIGHT in pixels, e.g. \"1024x1024\". Optional."},
            "steps": {"type": "integer", "description": "Denoising steps (more = slower, finer). Optional."},
            "seed": {"type": "integer", "description": "Random seed, to repeat an image exactly. Optional."},
        },
        "required": ["prompt"],
    }

    def __init__(
        self,
        backend: str | ImageBackend | None = None,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        variant: str | None = None,
        steps: int | None = None,
        size: str | tuple[int, int] | None = None,
        guidance: float | None = None,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: Any = None,
        http_retries: int = 3,
        backoff: float = 1.0,
        request_timeout: float = 120.0,
        timeout: float | None = 900.0,
    ) -> None:
        self.timeout = timeout
        self.default_steps = steps
        self.default_size = parse_size(size)  # a bad default is a programming error: raise now
        if backend is None:
            backend = os.environ.get(BACKEND_ENV) or "diffusers"
        if isinstance(backend, str):
            kind = backend.strip().lower()
            if kind == "diffusers":
                from glm_agent.tools.image.diffusers_backend import DiffusersBackend

                backend = DiffusersBackend(
                    model, device=device, dtype=dtype, steps=steps, guidance=guidance, variant=variant
                )
            elif kind in ("cogview", "zhipu", "zhipuai"):
                from glm_agent.tools.image.cogview_backend import CogViewBackend

                backend = CogViewBackend(
                    str(model) if model is not None else None,
                    api_key=api_key,
                    base_url=base_url,
                    timeout=request_timeout,
                    max_retries=http_retries,
                    backoff=backoff,
                    transport=transport,
                )
            else:
                raise ValueError(f"unknown image backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        self.backend: ImageBackend = backend
        if self.default_size is not None:
            self.backend.size_rule.check(*self.default_size)
        # Known at once, without the network (no model, no API key): the CLI warns, and the
        # model reads it in the description instead of an invitation to draw.
        problem = getattr(self.backend, "problem", None)
        self.unavailable: str | None = problem() if callable(problem) else None
        if self.unavailable:
            self.description = _UNAVAILABLE.format(reason=self.unavailable.rstrip("."))

    # -- arguments -----------------------------------------------------------------------

    def _request(self, arguments: dict[str, Any]) -> ImageRequest:
        prompt = arguments.get("prompt")
        if prompt is None:
            # Some models put the description under another common key.
            prompt = next((arguments[k] for k in ("description", "text", "query") if k in arguments), None)
        if not isinstance(prompt, str) or not prompt.strip():
            raise ImageGenerationError(
                "the prompt is empty: describe the image to draw in English, e.g. "
                "\"a watercolor painting of a red fox in a snowy forest at dawn\"."
            )
        prompt = prompt.strip()
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ImageGenerationError(
                f"the prompt is {len(prompt)} characters long; keep it under {MAX_PROMPT_CHARS} "
                "(about 50-100 words work best)."
            )
        size = parse_size(arguments.get("size")) or self.default_size
        if size is not None:
            self.backend.size_rule.check(*size)
        steps = _int_arg(arguments, "steps", 1, MAX_STEPS)
        seed = _int_arg(arguments, "seed", 0, 2**63 - 1)
        return ImageRequest(
            prompt=prompt,
            width=size[0] if size else None,
            height=size[1] if size else None,
            steps=steps or self.default_steps,
            seed=seed,
        )

    # -- the call ------------------------------------------------------------------------

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        started = time.perf_counter()
        try:
            request = self._request(arguments)
            generated = await self.backend.generate(request)
            path = _save_png(generated, request, Path(ctx.workspace))
        except ImageGenerationError as exc:
            return ToolResult(content=f"Image generation failed: {exc}", is_error=True, metadata=METADATA)
        except OSError as exc:  # the workspace is not writable, the disk is full ...
            return ToolResult(
                content=f"Image generation failed: could not save the image ({exc}).",
                is_error=True,
                metadata=METADATA,
            )
        except Exception as exc:  # a backend bug must not end the conversation
            return ToolResult(
                content=f"Image generation failed: {type(exc).__name__}: {exc}",
                is_error=True,
                metadata=METADATA,
            )
        seconds = time.perf_counter() - started
        width, height = generated.image.size
        settings = [f"{width}x{height}"]
        if generated.steps:
            settings.append(f"{generated.steps} steps")
        if generated.seed is not None:
            settings.append(f"seed {generated.seed}")
        shown = request.prompt if len(request.prompt) <= 100 else request.prompt[:97].rstrip() + "..."
        content = (
            f"Generated an image of \"{shown}\" and showed it to the user. It is saved in the "
            f"workspace as {path.name} ({', '.join(settings)})."
        )
        return ToolResult(
            content=content,
            metadata=METADATA,
            attachments=[Attachment(path=str(path), mime="image/png", description=request.prompt[:500])],
            data={
                "path": str(path),
                "file": path.name,
                "width": width,
                "height": height,
                "steps": generated.steps,
                "seed": generated.seed,
                "backend": generated.backend,
                "model": generated.model,
                "seconds": round(seconds, 3),
                **{k: v for k, v in generated.extra.items() if v is not None},
            },
        )

    async def aclose(self) -> None:
        await self.backend.aclose()

    def __repr__(self) -> str:
        return f"<ImageTool {self.name!r} backend={self.backend!r}>"


def _int_arg(arguments: dict[str, Any], key: str, low: int, high: int) -> int | None:
    value = arguments.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ImageGenerationError(f"{key} must be a whole number, not {value!r}.")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise ImageGenerationError(f"{key} must be a whole number, not {value!r}.")
    if not low <= value <= high:
        raise ImageGenerationError(f"{key}={value} is out of range; use a value from {low} to {high}.")
    return value


def _save_png(generated: GeneratedImage, request: ImageRequest, workspace: Path) -> Path:
    """Write the image as a new PNG (never overwriting) with the prompt and settings embedded."""
    from PIL import PngImagePlugin

    workspace.mkdir(parents=True, exist_ok=True)
    info = PngImagePlugin.PngInfo()
    info.add_itxt("prompt", request.prompt)
    info.add_text("generator", f"glm-agent {generated.backend}:{generated.model}")
    if generated.seed is not None:
        info.add_text("seed", str(generated.seed))
    if generated.steps:
        info.add_text("steps", str(generated.steps))
    image = generated.image
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    # Sandboxed code may share this folder: a new file only (O_EXCL), never through a link.
    names = (f"image-{stamp}-{secrets.token_hex(3)}.png" for _ in range(100))
    return Workspace(workspace).create_new(names, buffer.getvalue())
