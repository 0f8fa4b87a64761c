"""What every text-to-image backend accepts and returns, and how sizes are read and checked.

A backend turns an `ImageRequest` into a `GeneratedImage` (a PIL image plus what was actually
used: size, steps, seed). Anything the user or the model can fix is raised as
`ImageGenerationError`, whose message is written to be shown as a tool observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from glm_agent.core.errors import GlmAgentError

__all__ = [
    "NOT_SET_UP",
    "ImageGenerationError",
    "ImageRequest",
    "GeneratedImage",
    "ImageBackend",
    "SizeRule",
    "parse_size",
]


# Ends the messages of a backend that cannot work at all: written for the model, which would
# otherwise promise the user a picture.
NOT_SET_UP = "Tell the user image generation is not set up."


class ImageGenerationError(GlmAgentError, RuntimeError):
    """A failure the caller can act on; the message says what happened and what to do."""


@dataclass
class ImageRequest:
    prompt: str
    width: int | None = None  # None: the backend's native size
    height: int | None = None
    steps: int | None = None  # None: the backend's default
    seed: int | None = None  # None: a random seed, reported back
    guidance: float | None = None
    negative_prompt: str | None = None


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    backend: str
    model: str
    seed: int | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class ImageBackend(Protocol):
    name: str
    model: str
    size_rule: "SizeRule"

    async def generate(self, request: ImageRequest) -> GeneratedImage: ...

    async def aclose(self) -> None: ...

    # Optional: `problem() -> str | None` says, without the network, why the backend cannot
    # work at all (no model, no key); the tool then tells the model it is unavailable.


@dataclass(frozen=True)
class SizeRule:
    """Allowed image sizes: each side in [min_side, max_side] and a multiple of `multiple`.

    Latent diffusion models downsample by 8 (SD/SDXL VAEs), so other sizes either fail deep
    inside the UNet or get silently cropped; CogView's API wants multiples of 16.
    """

    min_side: int = 64
    max_side: int = 2048
    multiple: int = 8
    max_pixels: int | None = None

    def check(self, width: int, height: int) -> None:
        for label, side in (("width", width), ("height", height)):
            if not self.min_side <= side <= self.max_side:
                raise ImageGenerationError(
                    f"size {width}x{height} is out of range: {label} must be between "
                    f"{self.min_side} and {self.max_side} pixels. Use e.g. size=\"512x512\"."
                )
            if side % self.multiple:
                lo = max(self.min_side, side // self.multiple * self.multiple)
                raise ImageGenerationError(
                    f"size {width}x{height} is not allowed: {label} must be a multiple of "
                    f"{self.multiple} (e.g. {lo})."
                )
        if self.max_pixels and width * height > self.max_pixels:
            raise ImageGenerationError(
                f"size {width}x{height} has too many pixels ({width * height}); the limit is "
                f"{self.max_pixels}. Choose a smaller size."
            )


_SIZE = re.compile(r"^\s*(\d{1,6})\s*(?:[x×X*,]\s*(\d{1,6}))?\s*(?:px)?\s*$")


def parse_size(value: Any) -> tuple[int, int] | None:
    """Read a size as the model or the user writes it: "512x768", "512*768", "512", 512, [512, 768].

    Returns (width, height), or None for "no size given". Raises `ImageGenerationError` for text
    that is not a size at all (bounds are checked separately, per backend).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ImageGenerationError(f"size must look like \"512x512\", not {value!r}.")
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        return int(value[0]), int(value[1])
    if isinstance(value, dict) and {"width", "height"} <= value.keys():
        return parse_size([value["width"], value["height"]])
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match:
            width = int(match.group(1))
            height = int(match.group(2) or width)
            return width, height
    raise ImageGenerationError(
        f"could not read size {value!r}: write it as WIDTHxHEIGHT, e.g. \"512x512\" or \"768x512\"."
    )
