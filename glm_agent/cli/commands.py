"""The top-level commands: `chat`, `run` and `tools`.

`chat` and `run` take the shared agent options (`glm_agent.cli.options`); errors from the
layers below are reported by the command group (`glm_agent.cli.errors`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from glm_agent.cli.errors import fail
from glm_agent.cli.options import AgentOptions, with_agent_options
from glm_agent.cli.run_json import FORMAT_HELP

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
    load: Optional[Path] = typer.Option(
        None, "--load", help="Start from a session saved with /save, or a saved chat by name (see `glm-agent sessions`)."),
    resume: bool = typer.Option(False, "--continue", "-c", help="Continue the last chat (each chat saves itself)."),
) -> None:
    """Chat with the agent in the terminal (streamed answers, tool panels, /help for commands)."""
    from glm_agent.agent.session import SessionFileError, default_home, read_session_file, sessions_root
    from glm_agent.cli.build import build_agent
    from glm_agent.cli.chat import ChatApp
    from glm_agent.cli.sessions import Autosave, latest_session, session_file_for

    if not _stdin_is_open():
        raise fail("chat reads what you type from stdin, but stdin is closed; use `glm-agent run PROMPT` in scripts")
    if load and resume:
        raise fail("give either --load FILE or --continue, not both")
    if resume:
        load = latest_session()
    elif load:
        load = session_file_for(load)
    if load:
        try:  # a bad file is reported before a model is loaded
            read_session_file(load)
        except SessionFileError as exc:
            raise fail(str(exc)) from None
    agent = build_agent(options)
    autosave = Autosave(agent, sessions_root())
    if load:
        try:
            agent.load(load)
        except SessionFileError as exc:
            raise fail(str(exc)) from None
        autosave.adopt(load)
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)

    async def main_loop() -> None:
        try:
            await ChatApp(agent, history_file=home / "chat_history", autosave=autosave).run()
        finally:
            await agent.aclose()
            await agent.model.aclose()

    asyncio.run(main_loop())


@with_agent_options
def run(
    options: AgentOptions,
    prompt: str = typer.Argument(..., help="The user message ('-' reads it from stdin)."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the run as JSON Lines (format below) instead of the answer."
    ),
) -> None:
    """Run one prompt and print the answer (exit code 1 if the run did not complete)."""
    from glm_agent.cli.build import build_agent
    from glm_agent.cli.run_json import JsonLinesLog
    from glm_agent.core.terminal import safe_text

    if prompt == "-":
        prompt = _prompt_from_stdin()
        if not prompt.strip():
            raise fail("`run -` read an empty prompt from stdin; pipe the question in: echo 'question' | glm-agent run -")
    elif not prompt.strip():
        raise fail("the prompt is empty; give the question as the argument, or '-' to read it from stdin")
    agent = build_agent(options)
    log = JsonLinesLog(typer.echo, lambda: agent.run_usage) if as_json else None

    async def go() -> tuple[str, str]:
        final_text, status = "", "error"
        try:
            async for event in agent.stream(prompt):
                if log is not None:
                    log.event(event)
                if event.type == "final":
                    final_text, status = event.text, event.status
                elif event.type == "error":
                    typer.echo(f"error: {safe_text(event.message)}", err=True)
        finally:
            await agent.aclose()
            await agent.model.aclose()
        return final_text, status

    text, status = asyncio.run(go())
    if not as_json:
        typer.echo(safe_text(text))
    if status != "completed":
        if not as_json:
            why = " (the model gave an empty answer, also when asked again)" if status == "empty" else ""
            typer.echo(f"(run ended with status {status}{why})", err=True)
        raise typer.Exit(1)


run.__doc__ = f"{run.__doc__}\n\n{FORMAT_HELP}"  # typer shows the docstring as the help


def list_tools() -> None:
    """List the built-in tools."""
    from glm_agent.tools import registry

    for name, text in registry.describe().items():
        typer.echo(f"{name:10} {text}")
