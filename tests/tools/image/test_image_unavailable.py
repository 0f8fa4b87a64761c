"""The image tool when it cannot work: without a model or key the user is warned at start and
the model is told the tool is unavailable (so it does not promise a picture); a hub that
cannot be reached is summarised in the tool's answer, its retry logs never reach the screen."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from glm_agent.agent.loop import Agent
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.image import ImageTool


class ToolsSeen(ScriptedModel):
    """Records the tool specs the agent gives the model."""

    def __init__(self, turns):
        super().__init__(turns)
        self.tools_seen = []

    async def stream(self, messages, tools, settings=None):
        self.tools_seen.append(list(tools))
        async for event in super().stream(messages, tools, settings):
            yield event


@pytest.mark.parametrize("make,reason", [
    (lambda d: ImageTool(), "no text-to-image model is configured"),
    (lambda d: ImageTool(model=d / "no-such-folder"), "does not exist"),
    (lambda d: ImageTool(backend="cogview"), "needs a Zhipu API key"),
])
async def test_a_tool_that_cannot_work_tells_the_model(tmp_path, make, reason):
    tool = make(tmp_path)
    assert reason in tool.unavailable
    model = ToolsSeen(["Image generation is not set up here."])
    agent = Agent(model, tools=[tool])
    try:
        [final] = [e async for e in agent.stream("draw me a cat") if e.type == "final"]
    finally:
        await agent.aclose()
    [spec] = model.tools_seen[0]
    assert spec.name == "cogview" and spec.description.startswith("Image generation is NOT available")
    assert reason in spec.description and "do not promise" in spec.description
    assert final.status == "completed"


@pytest.mark.parametrize("make", [
    lambda d, pipe: ImageTool(model=pipe),
    lambda d, pipe: ImageTool(model="stabilityai/sdxl-turbo"),  # a hub id is not looked up at start
    lambda d, pipe: ImageTool(backend="cogview", api_key="key"),
])
def test_a_tool_that_may_work_keeps_its_description(tmp_path, tiny_pipeline_dir, make):
    tool = make(tmp_path, tiny_pipeline_dir)
    assert tool.unavailable is None
    assert "NOT available" not in tool.spec().description and "image" in tool.spec().description


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GLM_AGENT_IMAGE", "ZHIPU", "GLM_AGENT_DEBUG"))}
    return {**env, "GLM_AGENT_HOME": str(tmp_path / "home"), "COLUMNS": "200", "NO_COLOR": "1",
            "PYTHONPATH": str(Path(__file__).parents[3]), **extra}


DRAW = [{"content": "", "tool_calls": [{"name": "cogview", "arguments": {"prompt": "a cat"}}]}, "done"]


def _run(tmp_path: Path, *args: str, env: dict[str, str], turns=DRAW) -> subprocess.CompletedProcess:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(turns))
    return subprocess.run([sys.executable, "-m", "glm_agent", "run", "draw a cat", "--json", "--model",
                           f"scripted:{script}", "--tools", "image", *args],
                          capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL)


def _tool_result(out: subprocess.CompletedProcess) -> str:
    [record] = [json.loads(line) for line in out.stdout.splitlines() if '"tool_result"' in line]
    return record["result"]["content"]


@pytest.mark.parametrize("args,reason", [
    ([], "no text-to-image model is configured"),
    (["--image-backend", "cogview"], "needs a Zhipu API key"),
])
def test_the_cli_warns_at_start_once(tmp_path, args, reason):
    out = _run(tmp_path, *args, env=_env(tmp_path))
    assert out.returncode == 0, out.stderr
    [warning] = [line for line in out.stderr.splitlines() if line.strip()]
    assert warning.startswith("warning: the image (cogview) tool is unavailable: ") and reason in warning
    assert "the model is told so" in warning


def test_the_cli_does_not_warn_when_the_model_may_work(tmp_path, tiny_pipeline_dir):
    out = _run(tmp_path, "--image-model", str(tiny_pipeline_dir), env=_env(tmp_path), turns=["no picture"])
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr
    out = _run(tmp_path, "--image-model", str(tmp_path / "missing"), env=_env(tmp_path), turns=["no picture"])
    assert out.returncode == 0 and "does not exist" in out.stderr and out.stderr.startswith("warning: ")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_an_unreachable_hub_is_one_summary_and_its_retry_logs_stay_off_the_screen(tmp_path):
    port = _closed_port()
    env = _env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))
    env.pop("HF_HUB_OFFLINE", None)
    out = _run(tmp_path, "--image-model", "glm-agent-tests/no-such-pipeline", env=env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "", out.stderr  # no "Retrying in 1s [Retry 1/5]", no request errors
    text = _tool_result(out)
    assert f"127.0.0.1:{port} could not be reached" in text and "attempts)" in text
    assert "hf download glm-agent-tests/no-such-pipeline" in text
