"""The `glm-agent chat` terminal: streamed markdown answers, tool panels, slash commands.

Ctrl-C during a turn interrupts that turn (the conversation stays consistent); at the prompt
it clears the line; Ctrl-D or /exit leaves.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from glm_agent.agent.loop import Agent
from glm_agent.agent.session import SessionFileError
from glm_agent.core.events import ErrorEvent, FinalAnswer, TextDeltaEvent, ToolCallFinished, ToolCallStarted
from glm_agent.core.terminal import safe_markdown, safe_text
from glm_agent.tools.browser.citations import render_citations

__all__ = ["ChatApp", "HELP"]

HELP = """\
/help          this help
/clear         forget the conversation (tools keep their state)
/tools         list the tools this session can use
/save FILE     save the conversation to a JSON file
/load FILE     load a conversation saved with /save
/exit          leave (Ctrl-D works too)
Ctrl-C interrupts a running answer."""

MAX_PANEL_LINES = 30


def _short(text: str, lines: int = MAX_PANEL_LINES) -> str:
    parts = text.splitlines()
    if len(parts) <= lines:
        return text
    keep = lines // 2
    return "\n".join(parts[:keep] + [f"… ({len(parts) - 2 * keep} more lines) …"] + parts[-keep:])


def _plain(text: object, style: str = "") -> Text:
    """Untrusted text (model, tools, files) as a rich Text: no markup, no terminal controls."""
    return Text(safe_text(text), style=style)


class ChatApp:
    def __init__(self, agent: Agent, console: Console | None = None, history_file: Path | None = None):
        self.agent = agent
        self.console = console or Console(highlight=False)
        self.history_file = history_file
        self.citations: dict[str, dict[str, Any]] = {}

    # ---- one turn ------------------------------------------------------------------------

    async def turn(self, prompt: str) -> None:
        text = ""
        live: Live | None = None

        def start_live() -> Live:
            view = Live(Markdown(""), console=self.console, refresh_per_second=12, transient=False)
            view.start()
            return view

        try:
            async for event in self.agent.stream(prompt):
                if isinstance(event, TextDeltaEvent):
                    if live is None:
                        live = start_live()
                    text += event.text
                    live.update(Markdown(safe_markdown(text)))
                elif isinstance(event, ToolCallStarted):
                    if live is not None:
                        live.stop()
                        live, text = None, ""
                    self._show_call(event)
                elif isinstance(event, ToolCallFinished):
                    self._show_result(event)
                elif isinstance(event, ErrorEvent):
                    if live is not None:
                        live.stop()
                        live = None
                    self.console.print(Panel(_plain(event.message), title="error", border_style="red"))
                elif isinstance(event, FinalAnswer):
                    if live is not None:
                        live.update(Markdown(safe_markdown(render_citations(text, self.citations))))
                        live.stop()
                        live = None
                    if event.status == "max_steps":
                        self.console.print(f"[yellow]stopped after {self.agent.max_steps} steps[/yellow]")
        finally:
            if live is not None:
                live.stop()

    def _show_call(self, event: ToolCallStarted) -> None:
        call = event.call
        body = next(iter(call.arguments.values())) if len(call.arguments) == 1 else None
        if isinstance(body, str) and "\n" in body:
            content: Any = Syntax(safe_text(body), "python" if call.name == "python" else "text", word_wrap=True)
        else:
            arguments = safe_text(json.dumps(call.arguments, ensure_ascii=False, indent=1))
            content = Syntax(arguments, "json", word_wrap=True)
        title = _plain(f"tool call · {call.name}")
        self.console.print(Panel(content, title=title, border_style="cyan", title_align="left"))

    def _show_result(self, event: ToolCallFinished) -> None:
        result = event.result
        self.citations.update({str(k): v for k, v in (result.data.get("citations") or {}).items()})
        items: list[Any] = [_plain(_short(result.content))]
        for attachment in result.attachments:
            items.append(_plain(f"📎 {attachment.path}", style="bold green"))
            if attachment.mime.startswith("image/"):
                self._show_image(attachment.path)
        style = "red" if result.is_error else "green"
        title = _plain(f"{event.call.name} · {'error' if result.is_error else 'result'} · {event.seconds:.1f}s")
        self.console.print(Panel(Group(*items), title=title, border_style=style, title_align="left"))

    def _show_image(self, path: str) -> None:
        from glm_agent.tools.image.display import show_image_inline

        try:
            show_image_inline(path, self.console, workspace=self.agent.workspace)  # no link followed
        except Exception:  # inline display is a nicety; the path is already printed
            pass

    # ---- slash commands ------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.console.print(HELP)
        elif name == "/clear":
            self.agent.reset()
            self.citations.clear()
            self.console.print("[dim]conversation cleared[/dim]")
        elif name == "/tools":
            if not self.agent.tools:
                self.console.print("no tools (start with --tools python,browser,...)")
            for tool in self.agent.tools.values():
                first = tool.description.splitlines()[0] if tool.description else ""
                self.console.print(Text.assemble(_plain(tool.name, "bold"), " — ", _plain(first)))
        elif name == "/save":
            if not arg:
                self.console.print("[red]usage: /save FILE[/red]")
            else:
                try:
                    path = self.agent.save(Path(arg).expanduser())
                except OSError as exc:  # a directory, no permission, disk full: say so, keep chatting
                    self.console.print(_plain(f"cannot save to {arg}: {exc.strerror or exc}", "red"))
                else:
                    self.console.print(_plain(f"saved {len(self.agent.history)} messages to {path}"))
        elif name == "/load":
            if not arg:
                self.console.print("[red]usage: /load FILE[/red]")
            else:
                try:
                    self.agent.load(Path(arg).expanduser())
                except SessionFileError as exc:  # the conversation so far is kept as it was
                    self.console.print(_plain(exc, "red"))
                else:
                    self.citations.clear()  # they belonged to the conversation just replaced
                    self.console.print(_plain(f"loaded {len(self.agent.history)} messages from {arg}"))
        else:
            self.console.print(Text.assemble(_plain(f"unknown command {name}", "red"), " — /help lists them"))
        return True

    # ---- the loop ------------------------------------------------------------------------

    async def run(self) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        history = FileHistory(str(self.history_file)) if self.history_file else InMemoryHistory()
        session: PromptSession[str] = PromptSession(history=history)
        model_name = getattr(self.agent.model, "name", "model")
        tools = ", ".join(self.agent.tools) or "none"
        self.console.print(Text.assemble(("glm-agent", "bold"), " · model ", _plain(model_name, "cyan"),
                                         " · tools ", _plain(tools, "cyan"), " · /help"))
        loop = asyncio.get_running_loop()
        while True:
            try:
                line = await session.prompt_async("› ")
            except KeyboardInterrupt:
                continue
            except EOFError:
                break
            if not line.strip():
                continue
            if line.startswith("/"):
                try:
                    if not self.command(line):
                        break
                except Exception as exc:  # a failing command never ends the chat
                    self.console.print(_plain(f"{line.split()[0]} failed: {type(exc).__name__}: {exc}", "red"))
                continue
            task = asyncio.ensure_future(self.turn(line))
            try:
                loop.add_signal_handler(signal.SIGINT, task.cancel)
            except (NotImplementedError, RuntimeError):
                pass
            try:
                await task
            except asyncio.CancelledError:
                self.console.print("[yellow]interrupted[/yellow]")
            except Exception as exc:  # never leave the chat because one turn failed
                self.console.print(Panel(_plain(f"{type(exc).__name__}: {exc}"), title="error", border_style="red"))
            finally:
                try:
                    loop.remove_signal_handler(signal.SIGINT)
                except (NotImplementedError, RuntimeError):
                    pass
        self.console.print("[dim]bye[/dim]")
