"""The top-level commands: `chat`, `run` and `tools`.

`chat` and `run` take the shared agent options (`glm_agent.cli.options`); errors from the
layers below are reported by the command group (`glm_agent.cli.errors`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from glm_agent.cli.errors import fail
from glm_agent.cli.options import AgentOptions, with_agent_options

__all__ = ["chat", "run", "list_tools"]


def _stdin_is_open() -> bool:
    """False when the program was started with stdin closed (`<&-`): sys.stdin is then None."""
    try:
        os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _prompt_from_stdin() -> str:
    """The prompt for `run -`: all of stdin, as UTF-8 text."""
    if not _stdin_is_open():
        raise fail("`run -` reads the prompt from stdin, but stdin is closed; "
                   "pipe it in: echo 'question' | glm-agent run -")
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise fail(f"stdin is not UTF-8 text (bad byte at offset {exc.start}); convert it, e.g. with iconv") from None


@with_agent_options
def chat(
    options: AgentOptions,
    load: Optional[Path] = typer.Option(None, "--load", help="Start from a session saved with /save."),
) -> None:
    """Chat with the agent in the terminal (streamed answers, tool panels, /help for commands)."""
    from glm_agent.agent.session import SessionFileError, default_home, read_session_file
    from glm_agent.cli.build import build_agent
    from glm_agent.cli.chat import ChatApp

    if not _stdin_is_open():
        raise fail("chat reads what you type from stdin, but stdin is closed; use `glm-agent run PROMPT` in scripts")
    if load:
        try:  # a bad file is reported before a model is loaded
            read_session_file(load)
        except SessionFileError as exc:
            raise fail(str(exc)) from None
    agent = build_agent(options)
    if load:
        try:
            agent.load(load)
        except SessionFileError as exc:
            raise fail(str(exc)) from None
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)

    async def main_loop() -> None:
        try:
            await ChatApp(agent, history_file=home / "chat_history").run()
        finally:
            await agent.aclose()
            await agent.model.aclose()

    asyncio.run(main_loop())


@with_agent_options
def run(
    options: AgentOptions,
    prompt: str = typer.Argument(..., help="The user message ('-' reads it from stdin)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole event log as JSON instead of the answer."),
) -> None:
    """Run one prompt and print the answer (exit code 1 if the run did not complete)."""
    from glm_agent.cli.build import build_agent
    from glm_agent.core.terminal import safe_json, safe_text

    if prompt == "-":
        prompt = _prompt_from_stdin()
        if not prompt.strip():
            raise fail("`run -` read an empty prompt from stdin; pipe the question in: echo 'question' | glm-agent run -")
    elif not prompt.strip():
        raise fail("the prompt is empty; give the question as the argument, or '-' to read it from stdin")
    agent = build_agent(options)

    async def go() -> tuple[str, str, list[dict]]:
        events: list[dict] = []
        final_text, status = "", "error"
        try:
            async for event in agent.stream(prompt):
                events.append(event.model_dump(mode="json"))
                if event.type == "final":
                    final_text, status = event.text, event.status
                elif event.type == "error":
                    typer.echo(f"error: {safe_text(event.message)}", err=True)
        finally:
            await agent.aclose()
            await agent.model.aclose()
        return final_text, status, events

    text, status, events = asyncio.run(go())
    if as_json:
        typer.echo(safe_json(json.dumps(events, ensure_ascii=False, indent=1)))
    else:
        typer.echo(safe_text(text))
    if status != "completed":
        if not as_json:
            why = " (the model gave an empty answer, also when asked again)" if status == "empty" else ""
            typer.echo(f"(run ended with status {status}{why})", err=True)
        raise typer.Exit(1)


def list_tools() -> None:
    """List the built-in tools."""
    from glm_agent.tools import registry

    for name, text in registry.describe().items():
        typer.echo(f"{name:10} {text}")
