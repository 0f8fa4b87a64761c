"""Chats that keep themselves: the autosave behind `chat`, `chat --continue`, and the
`glm-agent sessions` list.

Every conversation is written (atomically, as /save does) to `<home>/sessions/<name>.json`
after each turn, beside the session's workspace folder `<home>/sessions/<id>/`; `name` is
the session id, with `-2`, `-3` ... when that name is taken (a /clear starts a new
conversation in the same session). A chat in which nothing was asked writes nothing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from glm_agent.cli.errors import fail

if TYPE_CHECKING:
    from glm_agent.agent.loop import Agent
    from glm_agent.agent.session import SessionSummary

__all__ = ["Autosave", "sessions", "latest_session", "session_file_for"]


class Autosave:
    """Saves one agent's conversation after each turn to a file of its own under `root`."""

    def __init__(self, agent: Agent, root: Path, path: Path | None = None):
        self.agent = agent
        self.root = root
        self.path = path  # None until the conversation's first save picks a name

    def new_conversation(self, path: Path | None = None) -> None:
        """The agent's conversation was replaced (/clear, /load): keep the old file as it is
        and write the next one to `path`, or to a new file."""
        self.path = path

    def adopt(self, loaded: Path) -> None:
        """After loading `loaded`: go on writing it if it is one of ours, else start a file."""
        try:
            ours = loaded.resolve().parent == self.root.resolve() and loaded.suffix == ".json"
        except OSError:
            ours = False
        self.new_conversation(loaded if ours else None)

    def save(self) -> Path | None:
        """Write the conversation; None when nothing was asked yet. OSError if it cannot."""
        if not any(m.role == "user" for m in self.agent.history):
            return None
        if self.path is None:
            self.path = self._free_name()
        return self.agent.save(self.path)

    def _free_name(self) -> Path:
        base = self.agent.session_id
        for n in range(1, 10_000):
            path = self.root / (f"{base}.json" if n == 1 else f"{base}-{n}.json")
            if not os.path.lexists(path):
                return path
        raise FileExistsError(f"too many saved conversations named {base}-N.json in {self.root}")


def latest_session() -> Path:
    """The newest saved chat; a one-line error (typer exit) when there is none."""
    from glm_agent.agent.session import list_sessions, sessions_root

    found, _ = list_sessions()
    if not found:
        raise fail(f"no saved chat to continue in {sessions_root()}; start one with `glm-agent chat`")
    return found[0].path


def session_file_for(value: Path) -> Path:
    """`chat --load VALUE`: a file, or the name of a saved chat (as `glm-agent sessions` shows it)."""
    from glm_agent.agent.session import session_id_problem, sessions_root

    if value.exists() or value.is_symlink() or len(value.parts) != 1:
        return value
    name = value.name.removesuffix(".json")
    saved = sessions_root() / f"{name}.json"
    if session_id_problem(name) is None and saved.is_file():
        return saved
    return value  # reading it reports the missing file


def _one_line(text: str, width: int) -> str:
    from glm_agent.core.terminal import safe_text

    flat = " ".join(safe_text(text).split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _row(summary: SessionSummary, prompt_width: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary.modified))
    name = _one_line(summary.path.stem, 40)
    model = _one_line(summary.model or "?", 24)
    prompt = _one_line(summary.first_prompt, prompt_width) or "(nothing asked)"
    return f"{when}  {name:<24}  {model:<24}  {summary.messages:>4}  {prompt}"


def sessions(
    limit: int = typer.Option(20, "--limit", "-n", min=0, help="Show this many, newest first (0: all)."),
    show_paths: bool = typer.Option(False, "--paths", help="Also print each session's file."),
) -> None:
    """List saved chats: date, name, model, messages and the first prompt (newest first)."""
    from glm_agent.agent.session import list_sessions, sessions_root

    found, broken = list_sessions()
    root = sessions_root()
    if not found:
        typer.echo(f"no saved chats in {root} yet; `glm-agent chat` saves each one by itself")
    else:
        shown = found[:limit] if limit else found
        width = max(20, _terminal_width() - 84)
        typer.echo(f"{'DATE':<16}  {'NAME':<24}  {'MODEL':<24}  {'MSGS':>4}  FIRST PROMPT")
        for summary in shown:
            row = _row(summary, width)
            if show_paths:
                row = f"{row}\n    {_one_line(str(summary.path), 200)}"
            typer.echo(row)
        if len(shown) < len(found):
            typer.echo(f"… and {len(found) - len(shown)} older (--limit 0 shows all)")
        typer.echo("continue the last: glm-agent chat --continue · another: glm-agent chat --load NAME")
    if broken:
        names = ", ".join(_one_line(p.name, 60) for p in broken[:3]) + (" …" if len(broken) > 3 else "")
        typer.echo(f"({len(broken)} file(s) in {root} are not readable sessions: {names})", err=True)


def _terminal_width() -> int:
    return shutil.get_terminal_size((120, 24)).columns  # $COLUMNS, the terminal, else 120
