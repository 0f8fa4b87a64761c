"""`AgentOptions`: the one option list `chat` and `run` share, parsed by typer and turned into
an Agent by `build_agent`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from glm_agent.cli import app
from glm_agent.cli.build import build_agent
from glm_agent.cli.errors import command_group
from glm_agent.cli.options import AgentOptions, with_agent_options
from glm_agent.sandbox import bwrap_available


def _long_name(field: dataclasses.Field) -> str:
    return next(n for n in field.metadata["option"].param_decls if n.startswith("--"))


def _probe_app(seen: dict):
    probe = command_group()

    @probe.command()
    @with_agent_options
    def ask(
        options: AgentOptions,
        word: str = typer.Argument(..., help="A word."),
        loud: bool = typer.Option(False, "--loud", help="Shout."),
    ) -> None:
        """A command with the shared options and its own."""
        seen.update(options=options, word=word, loud=loud)

    @probe.command()
    def other() -> None:
        """A second command, so `probe` is a group as the real app is."""

    return probe


def test_every_field_is_an_option_parsed_into_agent_options(tmp_path):
    seen: dict = {}
    given = {
        "model": ("scripted:s.json", "scripted:s.json"),
        "tools": ("shell,me:tool", "shell,me:tool"),
        "system": ("be brief", "be brief"),
        "max_steps": ("3", 3),
        "unsafe_no_sandbox": (None, True),
        "workspace_quota_mb": ("0", 0),
        "image_model": ("some/model", "some/model"),
        "quant": ("int4", "int4"),
        "device": ("cpu", "cpu"),
        "apar": (None, True),
        "workspace": (str(tmp_path), tmp_path),
        "search": ("local", "local"),
        "search_index": ("pages", "pages"),
        "browser_allow": (["127.0.0.1:8080", "10.0.0.0/8"], ["127.0.0.1:8080", "10.0.0.0/8"]),
        "image_backend": ("cogview", "cogview"),
        "mcp": (["python server.py", "http://127.0.0.1:9/mcp"], ["python server.py", "http://127.0.0.1:9/mcp"]),
        "mcp_sandbox": (None, True),
    }
    fields = {f.name: f for f in dataclasses.fields(AgentOptions)}
    assert set(given) == set(fields), "a new AgentOptions field needs a line here"
    args = ["ask", "hello", "--loud"]
    for name, (text, _) in given.items():
        values = text if isinstance(text, list) else [text]
        for value in values:
            args += [_long_name(fields[name])] + ([value] if value is not None else [])
    result = CliRunner().invoke(_probe_app(seen), args)
    assert result.exit_code == 0, result.output
    assert seen["options"] == AgentOptions(**{name: value for name, (_, value) in given.items()})
    assert seen["word"] == "hello" and seen["loud"] is True


def test_the_dataclass_defaults_are_the_command_line_defaults():
    seen: dict = {}
    result = CliRunner().invoke(_probe_app(seen), ["ask", "hi"])
    assert result.exit_code == 0, result.output
    assert seen["options"] == AgentOptions() and seen["loud"] is False


@pytest.mark.parametrize("command", ["chat", "run"])
def test_chat_and_run_take_every_option_and_keep_their_own(command):
    group = get_command(app)
    cmd = group.commands[command]
    names = {opt for param in cmd.params for opt in param.opts}
    assert {_long_name(f) for f in dataclasses.fields(AgentOptions)} <= names
    assert "-m" in names and "-t" in names and "-s" in names
    assert ("--load" if command == "chat" else "--json") in names
    assert "options" not in {param.name for param in cmd.params}


def test_a_command_without_options_or_with_a_clashing_name_is_refused():
    def no_options(word: str) -> None: ...

    def clash(options: AgentOptions, model: str = "x") -> None: ...

    with pytest.raises(TypeError, match="options: AgentOptions"):
        with_agent_options(no_options)
    with pytest.raises(TypeError, match="model"):
        with_agent_options(clash)


def _script(tmp_path: Path) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(["done"]), encoding="utf-8")
    return f"scripted:{path}"


@pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
def test_build_agent_applies_each_option(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "a.html").write_text("<title>A</title><p>alpha</p>", encoding="utf-8")
    options = AgentOptions(
        model=_script(tmp_path), tools="python, shell,browser", system="be brief", max_steps=3,
        workspace_quota_mb=5, workspace=tmp_path / "ws", search_index=str(pages), browser_allow=["127.0.0.1:9"],
    )
    agent = build_agent(options)
    try:
        assert agent.system == "be brief" and agent.max_steps == 3
        assert agent.workspace == tmp_path / "ws"
        assert sorted(agent.tools) == ["python", "shell", "simple_browser"]
        for name in ("python", "shell"):
            box = agent.tools[name].sandbox
            assert box.workspace_quota_mb == 5 and not box.unsafe_no_sandbox
        browser = agent.tools["simple_browser"]
        assert browser.provider.name == "local" and browser.provider.source == str(pages)  # index alone: local
        assert asyncio.run(browser.guard.check_url("http://127.0.0.1:9/")).allowed
        assert not asyncio.run(browser.guard.check_url("http://127.0.0.1:10/")).allowed
    finally:
        asyncio.run(agent.aclose())
    unlimited = build_agent(dataclasses.replace(options, tools="shell", workspace_quota_mb=0, unsafe_no_sandbox=True))
    box = unlimited.tools["shell"].sandbox
    assert box.workspace_quota_mb is None and box.unsafe_no_sandbox


@pytest.mark.parametrize("change,hint,needle", [
    (dict(model="nowhere.gguf"), "--model", "not found"),
    (dict(tools="nosuchtool"), "--tools", "unknown tool 'nosuchtool'"),
    (dict(tools="json:dumps"), "--tools", "cannot load tool 'json:dumps'"),
    (dict(tools="glm_agent_no_such_module:f"), "--tools", "No module named"),
    (dict(tools="json:__name__"), "--tools", "neither a function nor a Tool"),
    (dict(search="local"), "--search", "needs an index"),
    (dict(search="altavista"), "--search", "unknown search provider 'altavista'"),
])
def test_bad_options_name_the_option(tmp_path, change, hint, needle):
    with pytest.raises(typer.BadParameter, match=needle) as info:
        build_agent(AgentOptions(**{"model": _script(tmp_path), "tools": "", **change}))
    assert hint in str(info.value.param_hint)
