"""Saved sessions are untrusted data: a session file never chooses the host folder that the
sandbox mounts writable at /mnt/data, never smuggles a path in as its session id, and a
refused file leaves the agent exactly as it was. Through every entry point: `Agent.load`,
`chat --load`, and `/load` inside a running chat (with the real sandboxed shell tool).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from glm_agent.agent import Agent, SessionFileError
from glm_agent.core.contracts import ToolContext
from glm_agent.core.messages import ToolCall
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.function import tool


@tool
def write_note(text: str, ctx: ToolContext) -> str:
    """Write a note into the session workspace.

    Args:
        text: What to write.
    """
    (ctx.workspace / "note.txt").write_text(text)
    return f"wrote to {ctx.workspace}"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("GLM_AGENT_HOME", str(home))
    return home


@pytest.fixture
def victim(tmp_path) -> Path:
    """A folder the user would not want a model to write: a virtualenv."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    (folder / "bin" / "activate").write_text("# the user's venv\n")
    return folder


def saved_session(tmp_path: Path, **changes) -> Path:
    """A genuine session file (written by Agent.save), then edited as an attacker would."""
    agent = Agent(ScriptedModel(["an old answer"]), system="old system", session_id="shared-session")
    agent.run_sync("an old question")
    path = agent.save(tmp_path / "shared" / "session.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    data.update(changes)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def hostile_workspaces(tmp_path: Path, home: Path, victim: Path) -> dict[str, str]:
    expected = home / "sessions" / "shared-session"
    link = tmp_path / "innocent-link"
    link.symlink_to(victim)
    link_to_own = tmp_path / "link-to-own-folder"
    expected.mkdir(parents=True, exist_ok=True)
    link_to_own.symlink_to(expected)
    return {
        "absolute": str(victim),
        "relative": "venv",
        "relative-dotdot": "../../venv",
        "dotdot-escape": str(expected / ".." / ".." / ".." / "venv"),
        "symlink": str(link),
        "symlink-to-own-folder": str(link_to_own),
        "sessions-root": str(home / "sessions"),
        "another-session": str(home / "sessions" / "someone-else"),
        "home": str(home),
        "filesystem-root": "/",
    }


WORKSPACE_CASES = [
    "absolute", "relative", "relative-dotdot", "dotdot-escape", "symlink", "symlink-to-own-folder",
    "sessions-root", "another-session", "home", "filesystem-root",
]
BAD_IDS = ["../../venv", "a/b", "/abs/path", "..", ".", "a/../../b", "a\\b", "", "x" * 300, "a\x00b",
           "-rf", ".hidden", "ok..", 5, ["a"], {"a": 1}, True]


def state(agent: Agent) -> tuple:
    return (list(agent.history), agent.system, agent.session_id, agent._workspace)


def fresh_agent(**kw) -> Agent:
    return Agent(ScriptedModel([ToolCall(name="write_note", arguments={"text": "hi"}), "noted"]),
                 tools=[write_note], system="current system", session_id="current-session", **kw)


# ---- Agent.load ----------------------------------------------------------------------------


@pytest.mark.parametrize("case", WORKSPACE_CASES)
def test_agent_load_refuses_a_file_that_names_another_folder(tmp_path, home, victim, case):
    hostile = hostile_workspaces(tmp_path, home, victim)[case]
    path = saved_session(tmp_path, workspace=hostile)
    agent = fresh_agent()
    agent.run_sync("a first question")
    before = state(agent)
    with pytest.raises(SessionFileError, match="field 'workspace'") as err:
        agent.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert state(agent) == before  # nothing changed
    # Tools still get the agent's own folder, under the sessions root.
    agent.model.turns += [ToolCall(name="write_note", arguments={"text": "owned"}), "ok"]
    agent.run_sync("write")
    assert [p.parent for p in tmp_path.rglob("note.txt")] == [home / "sessions" / "current-session"]
    assert (home / "sessions" / "current-session" / "note.txt").read_text() == "owned"
    assert sorted(p.name for p in victim.rglob("*")) == ["activate", "bin"]


@pytest.mark.parametrize("case", ["absolute", "dotdot-escape", "symlink", "another-session"])
def test_an_explicit_workspace_is_kept_and_a_file_naming_another_is_refused(tmp_path, home, victim, case):
    own = tmp_path / "app-workspace"
    hostile = hostile_workspaces(tmp_path, home, victim)[case]
    agent = fresh_agent(workspace=own)
    before = state(agent)
    with pytest.raises(SessionFileError, match="field 'workspace'"):
        agent.load(saved_session(tmp_path, workspace=hostile))
    assert state(agent) == before
    agent.load(saved_session(tmp_path, workspace=str(own)))  # its own folder is fine
    assert agent.workspace == own and agent.session_id == "shared-session"
    agent.run_sync("write")
    assert (own / "note.txt").exists() and not (victim / "note.txt").exists()


def test_a_file_without_a_workspace_works_in_the_folder_of_its_id(tmp_path, home):
    agent = fresh_agent()
    agent.load(saved_session(tmp_path, workspace=None))
    assert agent.session_id == "shared-session" and agent.system == "old system"
    assert agent.workspace == home / "sessions" / "shared-session"


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
def test_agent_load_refuses_a_session_id_that_is_not_a_plain_name(tmp_path, home, victim, bad_id):
    agent = fresh_agent()
    agent.run_sync("a first question")
    before = state(agent)
    with pytest.raises(SessionFileError, match="field 'session_id'"):
        agent.load(saved_session(tmp_path, session_id=bad_id, workspace=None))
    assert state(agent) == before
    assert agent.workspace == home / "sessions" / "current-session"
    assert sorted(p.name for p in victim.rglob("*")) == ["activate", "bin"]
    assert sorted(p.name for p in (home / "sessions").iterdir()) == ["current-session"]


@pytest.mark.parametrize("bad_id", [i for i in BAD_IDS if isinstance(i, str) and i], ids=repr)
def test_the_agent_itself_refuses_a_session_id_that_is_a_path(home, bad_id):
    with pytest.raises(ValueError, match="invalid session id"):
        Agent(ScriptedModel([]), session_id=bad_id)
    agent = Agent(ScriptedModel([]), session_id="fine-id")
    agent.session_id = bad_id  # set behind its back: the workspace still refuses to follow
    with pytest.raises(ValueError, match="invalid session id"):
        _ = agent.workspace


# ---- chat --load ---------------------------------------------------------------------------


def cli_env(tmp_path: Path, home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["GLM_AGENT_HOME"] = str(home)
    env["COLUMNS"] = "200"
    env["NO_COLOR"] = "1"
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return env


@pytest.mark.parametrize("change", [
    {"workspace": "absolute"}, {"workspace": "dotdot-escape"}, {"workspace": "symlink"},
    {"workspace": "relative"}, {"session_id": "../../venv"}, {"session_id": "a/b"},
], ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_chat_load_refuses_hostile_session_files(tmp_path, home, victim, change):
    values = hostile_workspaces(tmp_path, home, victim)
    field, value = next(iter(change.items()))
    path = saved_session(tmp_path, **{field: values.get(value, value)})
    script = tmp_path / "script.json"
    script.write_text(json.dumps(["hello"]), encoding="utf-8")
    out = subprocess.run(
        [sys.executable, "-m", "glm_agent", "chat", "--load", str(path), "--model", f"scripted:{script}", "--tools", ""],
        capture_output=True, text=True, env=cli_env(tmp_path, home), stdin=subprocess.DEVNULL, timeout=120,
    )
    assert out.returncode != 0
    assert f"field '{field}'" in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert sorted(p.name for p in victim.rglob("*")) == ["activate", "bin"]


# ---- /load in chat, with the real sandboxed shell ------------------------------------------


def test_slash_load_refuses_hostile_files_and_the_shell_keeps_its_own_folder(tmp_path, home, victim):
    pexpect = pytest.importorskip("pexpect")
    from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

    try:
        check_bwrap()
    except SandboxUnavailableError as exc:
        pytest.skip(f"no sandbox here: {exc}")
    values = hostile_workspaces(tmp_path, home, victim)
    files = {
        "workspace": saved_session(tmp_path / "a", workspace=values["absolute"]),
        "workspace ": saved_session(tmp_path / "b", workspace=values["dotdot-escape"]),
        "workspace  ": saved_session(tmp_path / "c", workspace=values["symlink"]),
        "session_id": saved_session(tmp_path / "d", session_id="../../venv", workspace=None),
    }
    turns = [
        "Hello, I am here.",
        {"content": "", "tool_calls": [
            {"name": "shell", "arguments": {"command": "echo owned > /mnt/data/owned.txt && echo written"}}]},
        "The file is written.",
    ]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(turns), encoding="utf-8")
    child = pexpect.spawn(
        sys.executable, ["-m", "glm_agent", "chat", "--model", f"scripted:{script}", "--tools", "shell"],
        env=cli_env(tmp_path, home), encoding="utf-8", timeout=90, dimensions=(40, 200),
    )
    try:
        child.expect("›")
        child.sendline("hi")
        child.expect("I am here")
        child.expect("›")
        for field, path in files.items():
            child.sendline(f"/load {path}")
            child.expect(f"field '{field.strip()}'")
            child.expect("›")
        child.sendline("write a file")
        child.expect("The file is written")
        child.expect("›")
        child.sendline(f"/save {tmp_path / 'after.json'}")
        child.expect("saved 6 messages")
        child.sendline("/exit")
        child.expect("bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert sorted(p.name for p in victim.rglob("*")) == ["activate", "bin"]
    written = list((home / "sessions").glob("*/owned.txt"))
    assert len(written) == 1 and written[0].parent.name != "shared-session"
    saved = json.loads((tmp_path / "after.json").read_text(encoding="utf-8"))
    assert saved["messages"][0]["content"] == "hi"  # the conversation was kept, not replaced
    assert saved["session_id"] == written[0].parent.name and saved["workspace"] is None
