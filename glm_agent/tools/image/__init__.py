"""Text-to-image: the `cogview` tool with a local diffusers backend or Zhipu's CogView API.

Nothing here imports torch, diffusers or PIL at import time; backends import them on first use.
"""

from glm_agent.tools.image.backend import (
    GeneratedImage,
    ImageBackend,
    ImageGenerationError,
    ImageRequest,
    SizeRule,
    parse_size,
)
from glm_agent.tools.image.cogview_backend import CogViewBackend
from glm_agent.tools.image.diffusers_backend import DiffusersBackend
from glm_agent.tools.image.display import detect_image_protocol, show_image_inline
from glm_agent.tools.image.tool import ImageTool

__all__ = [
    "ImageTool",
    "DiffusersBackend",
    "CogViewBackend",
    "ImageBackend",
    "ImageRequest",
    "GeneratedImage",
    "ImageGenerationError",
    "SizeRule",
    "parse_size",
    "show_image_inline",
    "detect_image_protocol",
]
