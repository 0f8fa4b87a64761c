"""Sessions that keep themselves: workspaces made only when a tool uses them (no empty
folders left behind), and `list_sessions`, which reads the saved chats back as untrusted data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from glm_agent.agent import Agent
from glm_agent.agent.session import list_sessions, sessions_root
from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.models.scripted import ScriptedModel


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GLM_AGENT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


class Writer(Tool):
    """Reads its workspace, and writes a file there when asked to."""

    name = "writer"
    description = "writes a file when asked"

    async def call(self, arguments, ctx):
        folder = ctx.workspace
        if arguments.get("write"):
            (folder / "out.txt").write_text("kept", encoding="utf-8")
        return ToolResult(content=str(folder))


class Pure(Tool):
    name = "pure"
    description = "never looks at the workspace"

    async def call(self, arguments, ctx):
        return ToolResult(content="42")


def folders(home: Path) -> list[str]:
    root = home / "sessions"
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


async def test_a_session_whose_tools_never_use_the_workspace_makes_no_folder(home):
    agent = Agent(ScriptedModel([ToolCall(name="pure"), "done"]), tools=[Pure()], session_id="pure-one")
    async with agent:
        assert (await agent.run("x")).output == "done"
        assert folders(home) == []
    assert folders(home) == []


async def test_a_folder_a_tool_made_but_left_empty_is_removed_at_close(home):
    agent = Agent(ScriptedModel([ToolCall(name="writer"), "done"]), tools=[Writer()], session_id="empty-one")
    async with agent:
        await agent.run("x")
        assert folders(home) == ["empty-one"]  # the tool asked for it: it exists while the session runs
    assert folders(home) == []


async def test_a_folder_with_files_and_a_given_workspace_are_kept(home, tmp_path):
    turns = [ToolCall(name="writer", arguments={"write": True}), "done"]
    async with Agent(ScriptedModel(turns), tools=[Writer()], session_id="full-one") as agent:
        await agent.run("x")
    assert folders(home) == ["full-one"]
    assert (home / "sessions" / "full-one" / "out.txt").read_text(encoding="utf-8") == "kept"

    given = tmp_path / "given"
    async with Agent(ScriptedModel([ToolCall(name="writer"), "done"]), tools=[Writer()], workspace=given) as agent:
        await agent.run("x")
    assert given.is_dir()  # the program's own folder, even empty, is never removed


async def test_a_folder_that_existed_before_the_session_is_never_removed(home):
    (home / "sessions" / "old-one").mkdir(parents=True)
    async with Agent(ScriptedModel([ToolCall(name="writer"), "done"]), tools=[Writer()], session_id="old-one") as agent:
        await agent.run("x")
    assert folders(home) == ["old-one"]


def test_the_workspace_of_a_tool_context_is_made_on_first_use(tmp_path):
    made = []

    def make() -> Path:
        made.append(1)
        (tmp_path / "w").mkdir()
        return tmp_path / "w"

    ctx = ToolContext(session_id="s", workspace=make)
    assert made == [] and "not made yet" in repr(ctx)
    assert ctx.workspace == tmp_path / "w" and ctx.workspace == tmp_path / "w"
    assert made == [1]  # once
    assert ToolContext(session_id="s", workspace=tmp_path).workspace == tmp_path


# ---- list_sessions ---------------------------------------------------------------------------


def saved(agent_id: str, question: str, when: float) -> Path:
    agent = Agent(ScriptedModel([f"answer to {question}"]), session_id=agent_id)
    agent.run_sync(question)
    path = agent.save(sessions_root() / f"{agent_id}.json")
    os.utime(path, (when, when))
    return path


def test_saved_chats_are_listed_newest_first_with_their_first_prompt_and_model(home):
    old = saved("older", "what is 2+2?", 1_000_000)
    new = saved("newer", "hello there", 2_000_000)
    found, broken = list_sessions()
    assert [s.path for s in found] == [new, old] and broken == []
    assert found[0].first_prompt == "hello there" and found[0].model == "scripted"
    assert found[0].messages == 2 and found[0].session_id == "newer" and found[0].modified == 2_000_000


def test_files_that_are_not_sessions_are_reported_and_links_and_temps_skipped(home, tmp_path):
    good = saved("good", "q", 1_000_000)
    root = sessions_root()
    (root / "garbage.json").write_text("{not json", encoding="utf-8")
    (root / "wrong.json").write_text(json.dumps({"format": 1, "messages": [{"role": "x"}]}),
                                     encoding="utf-8")
    outside = tmp_path / "outside.json"
    outside.write_bytes(good.read_bytes())
    for target in (outside, Path("/etc/passwd"), root / "nowhere.json"):
        (root / f"link-{target.stem}.json").symlink_to(target)
    (root / ".good.json.123.tmp").write_bytes(good.read_bytes())
    (root / "notes.txt").write_text("x", encoding="utf-8")
    (root / "dir.json").mkdir()
    found, broken = list_sessions()
    assert [s.path for s in found] == [good]
    assert [p.name for p in broken] == ["garbage.json", "wrong.json"]


def test_no_sessions_folder_is_an_empty_list(home):
    assert list_sessions() == ([], [])
