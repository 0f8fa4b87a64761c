"""The command line when things go wrong: a bad /save or /load prints one line and the chat
goes on with its conversation; bad --load files, a closed stdin and empty prompts give one
clear message and a non-zero exit, never a traceback."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["GLM_AGENT_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return env


def script_file(tmp_path: Path, turns) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns), encoding="utf-8")
    return path


def glm_agent(tmp_path: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glm_agent", *args], capture_output=True, text=True,
                          env=env_for(tmp_path), timeout=120, **kw)


def one_clear_line(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode != 0, out
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], out.stderr


def close_stdin() -> None:
    os.close(0)


def test_chat_survives_bad_save_and_load_targets(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    folder = tmp_path / "a-folder"
    folder.mkdir()
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    (tmp_path / "list.json").write_text("[1, 2, 3]")
    (tmp_path / "text.json").write_text('"just a string"')
    (tmp_path / "broken.json").write_text('{"format": 1, "messages": [')
    script = script_file(tmp_path, ["First answer.", "Second answer."])
    child = pexpect.spawn(
        sys.executable, ["-m", "glm_agent", "chat", "--model", f"scripted:{script}", "--tools", ""],
        env=env_for(tmp_path), encoding="utf-8", timeout=60, dimensions=(40, 200),
    )
    child.logfile_read = io.StringIO()
    try:
        child.expect("›")
        child.sendline("first question")
        child.expect("First answer")
        child.expect("›")
        attempts = [
            (f"/save {folder}", "cannot save to"),
            (f"/save {plain / 'session.json'}", "cannot save to"),
            (f"/load {folder}", "is a directory"),
            (f"/load {tmp_path / 'list.json'}", "top level is a JSON list"),
            (f"/load {tmp_path / 'text.json'}", "top level is a JSON string"),
            (f"/load {tmp_path / 'broken.json'}", "invalid JSON"),
            (f"/load {tmp_path / 'missing.json'}", "no session file"),
        ]
        for command, message in attempts:
            child.sendline(command)
            child.expect(message)
            child.expect("›")
        child.sendline("second question")  # the chat is alive and remembers
        child.expect("Second answer")
        child.expect("›")
        child.sendline(f"/save {tmp_path / 'kept.json'}")
        child.expect("saved 4 messages")
        child.sendline("/exit")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert "Traceback" not in child.logfile_read.getvalue()
    saved = json.loads((tmp_path / "kept.json").read_text(encoding="utf-8"))
    assert [m["content"] for m in saved["messages"]] == ["first question", "First answer.", "second question", "Second answer."]
    assert list(folder.iterdir()) == [] and plain.read_text() == "x"


@pytest.mark.parametrize("make,needle", [
    (lambda p: p / "missing.json", "no session file"),
    (lambda p: (p / "dir.json").mkdir() or p / "dir.json", "is a directory"),
    (lambda p: (p / "list.json").write_text("[]") and p / "list.json", "top level is a JSON list"),
    (lambda p: (p / "bad.json").write_bytes(b"\xff\xfe") and p / "bad.json", "not UTF-8"),
])
def test_chat_load_of_a_bad_file_says_so_in_one_line(tmp_path, make, needle):
    path = make(tmp_path)
    out = glm_agent(tmp_path, "chat", "--load", str(path), "--model", f"scripted:{script_file(tmp_path, [])}",
                    "--tools", "", stdin=subprocess.DEVNULL)
    one_clear_line(out, needle)
    assert str(path) in out.stderr


def test_chat_with_stdin_closed_says_so(tmp_path):
    out = glm_agent(tmp_path, "chat", "--model", f"scripted:{script_file(tmp_path, [])}", "--tools", "",
                    stdin=None, preexec_fn=close_stdin)
    one_clear_line(out, "stdin is closed")


def test_chat_with_stdin_at_end_of_file_leaves_cleanly(tmp_path):
    out = glm_agent(tmp_path, "chat", "--model", f"scripted:{script_file(tmp_path, [])}", "--tools", "",
                    stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and "bye" in out.stdout and "Traceback" not in out.stderr


@pytest.mark.parametrize("feed,needle", [
    (dict(stdin=None, preexec_fn=close_stdin), "stdin is closed"),
    (dict(stdin=subprocess.DEVNULL), "empty prompt"),
    (dict(input="  \n\t\n"), "empty prompt"),
])
def test_run_dash_with_nothing_to_read_never_calls_the_model(tmp_path, feed, needle):
    out = glm_agent(tmp_path, "run", "-", "--model", f"scripted:{script_file(tmp_path, [])}", "--tools", "", **feed)
    one_clear_line(out, needle)
    assert "ScriptedModel" not in out.stderr  # refused before any model call


def test_run_dash_with_bytes_that_are_not_utf8_and_an_empty_argument(tmp_path):
    script = script_file(tmp_path, [])
    out = subprocess.run([sys.executable, "-m", "glm_agent", "run", "-", "--model", f"scripted:{script}", "--tools", ""],
                         capture_output=True, env=env_for(tmp_path), input=b"caf\xe9?\n", timeout=120)
    assert out.returncode != 0 and b"not UTF-8" in out.stderr and b"Traceback" not in out.stderr
    one_clear_line(glm_agent(tmp_path, "run", "  ", "--model", f"scripted:{script}", "--tools", ""), "prompt is empty")


def test_run_dash_reads_a_real_prompt(tmp_path):
    out = glm_agent(tmp_path, "run", "-", "--model", f"scripted:{script_file(tmp_path, ['piped answer'])}",
                    "--tools", "", input="a question from a pipe\n")
    assert out.returncode == 0 and out.stdout.strip() == "piped answer"
