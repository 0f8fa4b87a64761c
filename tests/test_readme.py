"""Every Python example in the README runs as written, against a ScriptedModel.

`load_model(...)` is the one thing swapped: it returns a ScriptedModel that calls the first
tool the agent offers with the city named in the user's message, then answers with the tool's
result. Everything else (the Agent, `@tool`, streaming, saving) is the real code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import glm_agent
from glm_agent.core.messages import ToolCall, ToolMessage, UserMessage
from glm_agent.models.scripted import ScriptedModel

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def _weather_turn(messages):
    last = messages[-1]
    if isinstance(last, ToolMessage):
        return f"Here it is: {last.content}"
    assert isinstance(last, UserMessage)
    city = re.search(r"in (\w+)", last.content).group(1)
    return ToolCall(name="get_weather", arguments={"city": city})


def test_the_readme_has_python_examples():
    assert BLOCKS


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i + 1}" for i in range(len(BLOCKS))])
def test_readme_example_runs(code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GLM_AGENT_HOME", str(tmp_path / "home"))
    models: list[ScriptedModel] = []

    def load_model(spec=None, **options):
        models.append(ScriptedModel([_weather_turn] * 8))
        return models[-1]

    monkeypatch.setattr(glm_agent, "load_model", load_model)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "get_weather" in code:
        assert "Beijing: 22°C, sunny" in out and "completed" in out
        assert "get_weather -> Paris: 22°C, sunny" in out
        assert (tmp_path / "session.json").is_file()
