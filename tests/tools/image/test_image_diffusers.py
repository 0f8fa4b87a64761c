"""The cogview tool with the diffusers backend, on a real (tiny, random-weight) pipeline folder."""

from __future__ import annotations

import asyncio
import gc
import re
import time
import weakref

import numpy as np
import pytest
from PIL import Image

from glm_agent.core.contracts import ToolContext
from glm_agent.core.messages import ToolCall, ToolMessage
from glm_agent.tools.image import DiffusersBackend, ImageRequest, ImageTool


def ctx(path):
    return ToolContext(session_id="test", workspace=path)


async def test_generates_png_from_saved_folder(tiny_pipeline_dir, tmp_path):
    tool = ImageTool(model=tiny_pipeline_dir, steps=2)
    try:
        result = await tool.call({"prompt": "a small red cat", "size": "64x64", "seed": 7}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    assert result.metadata == "cogview_result"
    [attachment] = result.attachments
    assert attachment.mime == "image/png"
    path = tmp_path / result.data["file"]
    assert str(path) == attachment.path and path.parent == tmp_path
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (64, 64) and image.mode == "RGB"
        assert image.text["prompt"] == "a small red cat" and image.text["seed"] == "7"
    assert result.content == (
        f'Generated an image of "a small red cat" and showed it to the user. It is saved in the '
        f"workspace as {path.name} (64x64, 2 steps, seed 7)."
    )
    assert result.data["steps"] == 2 and result.data["backend"] == "diffusers"


async def test_agent_turn_with_scripted_model(tiny_pipeline_dir, tmp_path):
    from glm_agent.agent import Agent
    from glm_agent.models.scripted import ScriptedModel

    seen = {}

    def answer(messages):
        observation = [m for m in messages if isinstance(m, ToolMessage)][-1]
        seen["observation"] = observation
        name = re.search(r"image-[\w-]+\.png", observation.content).group(0)
        return f"Here is your picture ({name})."

    model = ScriptedModel(
        [ToolCall(name="cogview", arguments={"prompt": "a cute dog on the moon\n", "steps": 2, "seed": 3}), answer]
    )
    async with Agent(model, tools=[ImageTool(model=str(tiny_pipeline_dir))], workspace=tmp_path) as agent:
        result = await agent.run("Draw a dog on the moon")
    assert result.status == "completed", result.error
    observation = seen["observation"]
    assert not observation.is_error, observation.content
    assert observation.metadata == "cogview_result"
    [attachment] = observation.attachments
    with Image.open(attachment.path) as image:
        assert image.size == (64, 64)  # the tiny pipeline's native size: no size was asked for
    assert attachment.path.rsplit("/", 1)[1] in result.output


async def test_seed_reproducible_and_pipeline_reused(tiny_pipeline_dir, tmp_path):
    backend = DiffusersBackend(tiny_pipeline_dir, steps=2)
    try:
        first = await backend.generate(ImageRequest("a blue boat", 64, 64, seed=11))
        pipe = backend._pipe
        again = await backend.generate(ImageRequest("a blue boat", 64, 64, seed=11))
        other = await backend.generate(ImageRequest("a blue boat", 64, 64, seed=12))
        assert backend._pipe is pipe  # loaded once, reused
        assert backend.device == "cpu"
        a, b, c = (np.asarray(x.image, dtype=np.int16) for x in (first, again, other))
        assert np.array_equal(a, b)
        assert np.abs(a - c).mean() > 1.0
    finally:
        await backend.aclose()


async def test_non_square_size(tiny_pipeline_dir, tmp_path):
    tool = ImageTool(model=tiny_pipeline_dir, steps=2)
    try:
        result = await tool.call({"prompt": "a tree", "size": "128x64"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    with Image.open(result.attachments[0].path) as image:
        assert image.size == (128, 64)
    assert isinstance(result.data["seed"], int)  # a random seed is chosen and reported


async def test_concurrent_first_calls_load_once(tiny_pipeline_dir, tmp_path, monkeypatch):
    backend = DiffusersBackend(tiny_pipeline_dir, steps=2)
    loads = []
    real_load = backend.load

    def counting_load():
        loads.append(1)
        return real_load()

    monkeypatch.setattr(backend, "load", counting_load)
    try:
        images = await asyncio.gather(
            *(backend.generate(ImageRequest("a cat", 64, 64, seed=i)) for i in range(3))
        )
    finally:
        await backend.aclose()
    assert len(loads) == 1 and len(images) == 3


async def test_aclose_frees_the_pipeline(tiny_pipeline_dir):
    backend = DiffusersBackend(tiny_pipeline_dir, steps=2)
    await backend.generate(ImageRequest("a cat", 64, 64, seed=1))
    unet = weakref.ref(backend._pipe.unet)
    await backend.aclose()
    # The executor thread that ran the generation drops its work item just after the result is
    # delivered; on a loaded machine that can be a moment after aclose() returns.
    for _ in range(50):
        gc.collect()
        if unet() is None:
            break
        await asyncio.sleep(0.1)
    assert backend._pipe is None and unet() is None
    # A closed backend loads again when used again (a fresh session reusing the object).
    image = await backend.generate(ImageRequest("a cat", 64, 64, seed=1))
    assert image.image.size == (64, 64)
    await backend.aclose()


async def test_cancel_stops_the_denoising_loop(tiny_pipeline_dir):
    backend = DiffusersBackend(tiny_pipeline_dir)
    await backend.generate(ImageRequest("warm up", 64, 64, steps=1, seed=0))  # load first
    task = asyncio.create_task(backend.generate(ImageRequest("a cat", 64, 64, steps=200, seed=0)))
    await asyncio.sleep(0.3)
    started = time.perf_counter()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The worker thread notices at its next step and releases the run lock quickly
    # (200 steps would take several seconds).
    acquired = await asyncio.to_thread(backend._run_lock.acquire, True, 3.0)
    assert acquired, "the cancelled generation kept running"
    backend._run_lock.release()
    assert time.perf_counter() - started < 3.0
    await backend.aclose()


async def test_tool_timeout_in_agent_cancels(tiny_pipeline_dir, tmp_path):
    from glm_agent.agent import Agent
    from glm_agent.models.scripted import ScriptedModel

    tool = ImageTool(model=tiny_pipeline_dir, timeout=0.5)
    await tool.backend.generate(ImageRequest("warm up", 64, 64, steps=1, seed=0))
    model = ScriptedModel([ToolCall(name="cogview", arguments={"prompt": "a cat", "steps": 200}), "gave up"])
    async with Agent(model, tools=[tool], workspace=tmp_path) as agent:
        result = await agent.run("draw")
    observation = [m for m in result.messages if isinstance(m, ToolMessage)][0]
    assert observation.is_error  # the agent's timeout message (its wording is the loop's)
    assert not list(tmp_path.glob("*.png"))
    acquired = await asyncio.to_thread(tool.backend._run_lock.acquire, True, 3.0)
    assert acquired
    tool.backend._run_lock.release()


# -- bad model configuration: each is an observation that says what to do -------------------


async def test_missing_model_folder(tmp_path):
    tool = ImageTool(model=tmp_path / "no-such-model")
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error and "does not exist" in result.content and "--image-model" in result.content


async def test_folder_that_is_not_a_pipeline(tmp_path):
    (tmp_path / "empty").mkdir()
    result = await ImageTool(model=tmp_path / "empty").call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error and "model_index.json" in result.content


async def test_incomplete_pipeline_folder(tiny_pipeline_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_pipeline_dir, broken)
    shutil.rmtree(broken / "unet")
    result = await ImageTool(model=broken).call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error and "could not load" in result.content and str(broken) in result.content


async def test_no_model_configured(tmp_path):
    tool = ImageTool()  # built-in tools construct with no arguments
    assert tool.spec().name == "cogview" and tool.spec().parameters["required"] == ["prompt"]
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error
    assert "no text-to-image model is configured" in result.content and "GLM_AGENT_IMAGE_MODEL" in result.content


async def test_model_from_environment(tiny_pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GLM_AGENT_IMAGE_MODEL", str(tiny_pipeline_dir))
    tool = ImageTool(steps=1)
    try:
        result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content


async def test_hub_id_offline_fails_fast_with_advice(tmp_path):
    started = time.perf_counter()
    result = await ImageTool(model="glm-agent-tests/no-such-pipeline").call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error
    assert "Hugging Face hub" in result.content and "local folder" in result.content
    assert time.perf_counter() - started < 30


async def test_unwritable_workspace(tiny_pipeline_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    tool = ImageTool(model=tiny_pipeline_dir, steps=1)
    try:
        result = await tool.call({"prompt": "a cat"}, ctx(blocker / "ws"))
    finally:
        await tool.aclose()
    assert result.is_error and "could not save" in result.content


async def test_cuda_requested_without_cuda(tiny_pipeline_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = await ImageTool(model=tiny_pipeline_dir, device="cuda").call({"prompt": "a cat"}, ctx(tmp_path))
    assert result.is_error and "CUDA is not available" in result.content


@pytest.mark.gpu
async def test_cuda_fp16_generation(tiny_pipeline_dir, tmp_path):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    tool = ImageTool(model=tiny_pipeline_dir, steps=2)  # device auto -> cuda, dtype auto -> fp16
    try:
        result = await tool.call({"prompt": "a cat", "size": "512x512", "seed": 1}, ctx(tmp_path))
        assert tool.backend.device == "cuda" and tool.backend._pipe.unet.dtype == torch.float16
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    with Image.open(result.attachments[0].path) as image:
        assert image.size == (512, 512)
