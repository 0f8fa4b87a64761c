"""The command line: instant --help without torch, one-shot runs, and the chat terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
SCRIPT = [
    {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Beijing"}}]},
    "It is **22°C** and sunny in Beijing.",
]


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["GLM_AGENT_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "100"
    env["NO_COLOR"] = "1"  # plain text to match against
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return env


def script_file(tmp_path: Path, turns=SCRIPT) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns), encoding="utf-8")
    return path


def glm_agent(*args: str, tmp_path: Path, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glm_agent", *args],
        capture_output=True, text=True, env=env_for(tmp_path), input=input, timeout=120,
    )


def test_help_is_instant_and_never_imports_torch(tmp_path):
    code = (
        "import sys; sys.argv=['glm-agent','--help']\n"
        "from glm_agent.cli import app\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy=[m for m in ('torch','transformers','playwright','jupyter_client','diffusers','starlette') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env_for(tmp_path), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    for command in ("chat", "run", "tools", "model", "eval"):
        assert command in out.stdout


def test_run_prints_the_answer(tmp_path):
    out = glm_agent("run", "weather?", "--model", f"scripted:{script_file(tmp_path)}", "--tools", "demo_tools:get_weather", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "It is **22°C** and sunny in Beijing."


def test_run_json_prints_json_lines_with_text_merged_per_step(tmp_path):
    turns = [{"content": "Let me look it up.", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Beijing"}}]},
             "It is **22°C** and sunny in Beijing."]
    out = glm_agent("run", "weather?", "--json", "--model", f"scripted:{script_file(tmp_path, turns)}",
                    "--tools", "demo_tools:get_weather", tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]  # one object per line
    assert [r["type"] for r in records] == ["step", "tool_call", "tool_result", "step", "final"]
    first, call, result, second, final = records
    assert first["text"] == "Let me look it up." and second["text"] == "It is **22°C** and sunny in Beijing."
    assert call["step"] == result["step"] == 1 and second["step"] == 2
    assert call["call"]["arguments"] == {"city": "Beijing"} and result["result"]["content"] == "Beijing: 22°C, sunny"
    for step in (first, second):
        assert step["usage"]["completion_tokens"] > 0 and step["usage"]["prompt_tokens"] > 0 and step["seconds"] >= 0
    assert final["text"] == second["text"] and final["status"] == "completed" and final["steps"] == 2
    for key in ("prompt_tokens", "completion_tokens"):
        assert final["usage"][key] == first["usage"][key] + second["usage"][key]
    assert final["seconds"] >= first["seconds"] + second["seconds"] - 0.01


def test_run_json_of_a_failed_run_ends_with_its_error_and_exit_1(tmp_path):
    out = glm_agent("run", "hi", "--json", "--model", f"scripted:{script_file(tmp_path, [])}", "--tools", "",
                    tmp_path=tmp_path)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 1 and [r["type"] for r in records] == ["step", "error", "final"]
    assert "ScriptedModel has no turn 1" in records[1]["message"] and records[-1]["status"] == "error"


def test_run_exit_code_on_failure_and_bad_options(tmp_path):
    out = glm_agent("run", "hi", "--model", f"scripted:{script_file(tmp_path, [])}", "--tools", "", tmp_path=tmp_path)
    assert out.returncode == 1 and "ScriptedModel has no turn 1" in out.stderr
    out = glm_agent("run", "hi", "--model", f"scripted:{script_file(tmp_path)}", "--tools", "nosuchtool", tmp_path=tmp_path)
    assert out.returncode != 0 and "unknown tool 'nosuchtool'" in out.stderr
    out = glm_agent("run", "hi", "--model", str(tmp_path / "missing.gguf"), "--tools", "", tmp_path=tmp_path)
    assert out.returncode != 0 and "not found" in out.stderr


def test_tools_lists_builtins(tmp_path):
    out = glm_agent("tools", tmp_path=tmp_path)
    assert out.returncode == 0 and "python" in out.stdout and "browser" in out.stdout


def test_chat_terminal_in_a_pseudo_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    turns = SCRIPT + ["Second answer after clear."]
    child = pexpect.spawn(
        sys.executable,
        ["-m", "glm_agent", "chat", "--model", f"scripted:{script_file(tmp_path, turns)}", "--tools", "demo_tools:get_weather"],
        env=env_for(tmp_path), encoding="utf-8", timeout=60, dimensions=(40, 100),
    )
    try:
        child.expect("/help")
        child.expect("›")
        child.sendline("What's the weather in Beijing?")
        child.expect("tool call · get_weather")
        child.expect("Beijing: 22°C, sunny")  # the result panel
        child.expect("sunny in Beijing")  # the streamed markdown answer
        child.expect("›")
        child.sendline("/tools")
        child.expect("— Current weather for a city.")
        child.sendline(f"/save {tmp_path / 'chat.json'}")
        child.expect("saved 4 messages")
        child.sendline("/clear")
        child.expect("conversation cleared")
        child.sendline("again")
        child.expect("Second answer after clear")
        child.sendline("/exit")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    saved = json.loads((tmp_path / "chat.json").read_text(encoding="utf-8"))
    assert [m["role"] for m in saved["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_ctrl_c_interrupts_a_turn_without_leaving(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    turns = ["word " * 400, "still here"]
    path = script_file(tmp_path, turns)
    child = pexpect.spawn(
        sys.executable, ["-m", "glm_agent", "chat", "--model", f"scripted:{path}", "--tools", ""],
        env=env_for(tmp_path), encoding="utf-8", timeout=60, dimensions=(40, 100),
    )
    try:
        child.expect("›")
        child.sendline("talk a lot")
        child.expect("word")
        child.sendintr()
        child.expect("interrupted")
        child.expect("›")
        child.sendline("are you there?")
        child.expect("still here")
        child.expect("›")
        child.sendeof()
        child.expect("bye")
    finally:
        child.close(force=True)


def test_a_tool_whose_extra_is_missing_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    import typer

    from glm_agent.cli.build import build_agent
    from glm_agent.cli.options import AgentOptions

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "playwright" else real(name, *a))
    with pytest.raises(typer.BadParameter, match=r'playwright: pip install "glm-agent\[browser\]"'):
        build_agent(AgentOptions(model=f"scripted:{script_file(tmp_path)}", tools="browser"))


def test_local_model_without_the_engine_says_what_to_install(monkeypatch):
    import importlib.util

    from glm_agent.models.spec import ModelSpecError, resolve_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(ModelSpecError, match=r'pip install "glm-agent\[embedded\]"'):
        resolve_model("embedded")
