"""Arguments and sizes: what the model may send, and the observation it gets for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.tools.image import ImageGenerationError, ImageRequest, ImageTool, SizeRule, parse_size
from glm_agent.tools.image.backend import GeneratedImage


class RecordingBackend:
    """Stands in for a backend to see exactly what the tool asks for (no model involved)."""

    name = "recording"
    model = "none"
    size_rule = SizeRule()

    def __init__(self):
        self.requests: list[ImageRequest] = []
        self.closed = False

    async def generate(self, request):
        from PIL import Image

        self.requests.append(request)
        return GeneratedImage(Image.new("RGB", (request.width or 8, request.height or 8)), self.name, self.model)

    async def aclose(self):
        self.closed = True


@pytest.mark.parametrize(
    "value, expected",
    [
        ("512x768", (512, 768)),
        (" 512 X 768 ", (512, 768)),
        ("512*768", (512, 768)),
        ("1024×576", (1024, 576)),
        ("640", (640, 640)),
        ("256px", (256, 256)),
        (512, (512, 512)),
        ([320, 240], (320, 240)),
        ({"width": 64, "height": 128}, (64, 128)),
        (None, None),
        ("", None),
    ],
)
def test_parse_size(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["big", "512x", "x512", "-512x512", "5.5x4", True, [1, 2, 3], 3.5])
def test_parse_size_rejects(value):
    with pytest.raises(ImageGenerationError, match="512x512"):
        parse_size(value)


def test_size_rule():
    rule = SizeRule(min_side=64, max_side=2048, multiple=8)
    rule.check(64, 2048)
    with pytest.raises(ImageGenerationError, match="between 64 and 2048"):
        rule.check(4096, 512)
    with pytest.raises(ImageGenerationError, match="height must be a multiple of 8 \\(e.g. 96\\)"):
        rule.check(64, 100)


@pytest.mark.parametrize(
    "arguments, expected",
    [
        ({}, "prompt is empty"),
        ({"prompt": ""}, "prompt is empty"),
        ({"prompt": "  \n "}, "prompt is empty"),
        ({"prompt": 42}, "prompt is empty"),
        ({"prompt": "x" * 5000}, "under 4000"),
        ({"prompt": "a cat", "size": "100000x100000"}, "between 64 and 2048"),
        ({"prompt": "a cat", "size": "0x0"}, "between 64 and 2048"),
        ({"prompt": "a cat", "size": "513x512"}, "multiple of 8"),
        ({"prompt": "a cat", "size": "huge"}, "WIDTHxHEIGHT"),
        ({"prompt": "a cat", "steps": 0}, "steps=0 is out of range"),
        ({"prompt": "a cat", "steps": 100000}, "from 1 to 200"),
        ({"prompt": "a cat", "steps": "many"}, "whole number"),
        ({"prompt": "a cat", "steps": 2.5}, "whole number"),
        ({"prompt": "a cat", "steps": True}, "whole number"),
        ({"prompt": "a cat", "seed": -3}, "seed=-3 is out of range"),
    ],
)
async def test_bad_arguments_are_observations(tmp_path, arguments, expected):
    backend = RecordingBackend()
    result = await ImageTool(backend=backend).call(arguments, ToolContext("t", tmp_path))
    assert result.is_error and result.metadata == "cogview_result"
    assert result.content.startswith("Image generation failed: ") and expected in result.content, result.content
    assert backend.requests == [] and not list(tmp_path.iterdir())


async def test_lenient_argument_forms(tmp_path):
    backend = RecordingBackend()
    tool = ImageTool(backend=backend, steps=9, size="96x64")
    await tool.call({"prompt": "  a cat  \n", "steps": "4", "seed": 5.0}, ToolContext("t", tmp_path))
    await tool.call({"description": "a dog", "size": "128x128"}, ToolContext("t", tmp_path))
    first, second = backend.requests
    assert (first.prompt, first.steps, first.seed, first.width, first.height) == ("a cat", 4, 5, 96, 64)
    assert (second.prompt, second.steps, second.seed, second.width, second.height) == ("a dog", 9, None, 128, 128)
    assert len(list(tmp_path.glob("image-*.png"))) == 2  # unique names, nothing overwritten
    await tool.aclose()
    assert backend.closed


async def test_backend_crash_is_an_observation(tmp_path):
    class Broken(RecordingBackend):
        async def generate(self, request):
            raise RuntimeError("CUDA error: device-side assert triggered")

    result = await ImageTool(backend=Broken()).call({"prompt": "a cat"}, ToolContext("t", tmp_path))
    assert result.is_error and "RuntimeError: CUDA error" in result.content


def test_constructor_errors():
    with pytest.raises(ValueError, match="unknown image backend 'dalle'"):
        ImageTool(backend="dalle")
    with pytest.raises(ImageGenerationError):
        ImageTool(size="3x3")


def test_spec_for_the_model():
    from glm_agent.models.dialects import get_dialect

    spec = ImageTool().spec()
    glm4 = get_dialect("glm4")
    assert "\n## cogview\n\n如果用户的请求中包含了对图像的描述" in glm4.render([], [spec])  # GLM-4's built-in
    assert [(c.name, c.arguments) for c in glm4.parse("cogview\na red fox", [spec])[1]] == [("cogview", {"prompt": "a red fox"})]
    assert spec.parameters["required"] == ["prompt"]
    assert set(spec.parameters["properties"]) == {"prompt", "size", "steps", "seed"}


def test_import_is_light():
    code = (
        "import sys, glm_agent.tools.image, glm_agent.tools.image.tool, glm_agent.tools.image.display;"
        "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'PIL', 'httpx') if m in sys.modules];"
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_errors_are_glm_agent_errors():
    from glm_agent.core.errors import GlmAgentError

    assert issubclass(ImageGenerationError, GlmAgentError) and issubclass(ImageGenerationError, RuntimeError)
