"""The `glm-agent chat` terminal: streamed markdown answers, tool panels, slash commands.

While a turn runs, a spinner line says what the agent is busy with (loading the model,
reading the prompt, thinking, running a tool) and for how long; after each answer a line
gives the tokens and their speed. Each conversation saves itself (`glm_agent.cli.sessions`).
Ctrl-C during a turn interrupts that turn (the conversation stays consistent); at the prompt
it clears the line; Ctrl-D or /exit leaves. Tab completes slash commands; Alt-Enter (or Esc
then Enter) starts a new line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from rich.console import Console, Group
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from glm_agent.agent.loop import Agent
from glm_agent.agent.session import SessionFileError
from glm_agent.cli.activity import Activity, TurnView
from glm_agent.cli.sessions import Autosave, session_file_for
from glm_agent.core.events import (
    ErrorEvent,
    FinalAnswer,
    StepStarted,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallStarted,
)
from glm_agent.core.progress import progress_handler
from glm_agent.core.terminal import safe_markdown, safe_text
from glm_agent.tools.browser.citations import render_citations

__all__ = ["ChatApp", "HELP", "COMMANDS"]

# name -> what it does (the help text and the completion menu)
COMMANDS = {
    "/help": "this help",
    "/clear": "start a new conversation (the last one stays saved)",
    "/tools": "list the tools this session can use",
    "/save": "FILE: save the conversation to a JSON file",
    "/load": "FILE or NAME: load a saved conversation or chat",
    "/exit": "leave (Ctrl-D works too)",
}
HELP = "\n".join(f"{name:<7} {text}" for name, text in COMMANDS.items()) + """
Tab completes commands and file names. Alt-Enter (or Esc, Enter) starts a new line.
Ctrl-C interrupts a running answer. Each chat saves itself: glm-agent chat --continue
goes on with the last one, glm-agent sessions lists them."""

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


@contextlib.contextmanager
def _quiet_terminal() -> Iterator[None]:
    """While a turn runs, keys are not echoed: an echoed `^C` (or a typed-ahead word) moves
    the cursor under the live display, which then redraws one line off (the last line twice)
    and prints its next words after the `^C`. What is typed ahead still reaches the next prompt."""
    try:
        import termios

        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
    except (ImportError, OSError, ValueError, AttributeError):  # not a terminal
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    try:
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
    except termios.error:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSANOW, saved)


def _slash_completer() -> Any:
    """Completes `/commands` at the start of the line, and file names (and saved chats, for
    /load) after /save and /load."""
    from prompt_toolkit.completion import Completer, Completion, PathCompleter
    from prompt_toolkit.document import Document

    paths = PathCompleter(expanduser=True)

    class SlashCompleter(Completer):
        def get_completions(self, document: Document, complete_event: Any) -> Iterable[Completion]:
            text = document.text_before_cursor
            if not text.startswith("/") or "\n" in text:
                return
            name, space, arg = text.partition(" ")
            if not space:
                for command, meta in COMMANDS.items():
                    if command.startswith(name):
                        yield Completion(command, start_position=-len(name), display_meta=meta)
            elif name in ("/save", "/load"):
                arg = arg.lstrip()
                yield from paths.get_completions(Document(arg, len(arg)), complete_event)
                if name == "/load" and "/" not in arg:
                    yield from _saved_chats(arg)

    return SlashCompleter()


def _saved_chats(prefix: str) -> Iterable[Any]:
    from prompt_toolkit.completion import Completion

    from glm_agent.agent.session import sessions_root

    try:
        names = sorted(p.stem for p in sessions_root().glob("*.json") if p.is_file())
    except OSError:
        return
    for name in names:
        if name.startswith(prefix):
            yield Completion(name, start_position=-len(prefix), display_meta="saved chat")


class ChatApp:
    def __init__(self, agent: Agent, console: Console | None = None, history_file: Path | None = None,
                 autosave: Autosave | None = None):
        self.agent = agent
        self.console = console or Console(highlight=False)
        self.history_file = history_file
        self.autosave = autosave
        self.citations: dict[str, dict[str, Any]] = {}
        self._live: Live | None = None
        self._save_failed = False

    # ---- one turn ------------------------------------------------------------------------

    async def turn(self, prompt: str) -> None:
        activity = Activity()
        view = TurnView(activity)
        self._live = Live(view, console=self.console, refresh_per_second=10, transient=True)
        text = ""

        def flush_text() -> None:
            """Print the text written so far for good (the live view forgets it)."""
            nonlocal text
            if text.strip():
                self.console.print(Markdown(safe_markdown(text)))
            text = ""
            view.show(None)

        with _quiet_terminal(), progress_handler(activity.on_progress):
            self._live.start()
            try:
                async for event in self.agent.stream(prompt):
                    if isinstance(event, StepStarted):
                        activity.step_started()
                    elif isinstance(event, TextDeltaEvent):
                        text += event.text
                        activity.text()
                        view.show(Markdown(safe_markdown(text)))
                    elif isinstance(event, ToolCallStarted):
                        if activity.step is not None:
                            activity.model_finished(self.agent.run_usage)
                        flush_text()
                        self._show_call(event)
                        activity.tool_started(event.call.id, event.call.name)
                    elif isinstance(event, ToolCallFinished):
                        activity.tool_finished(event.call.id)
                        self._show_result(event)
                    elif isinstance(event, ErrorEvent):
                        activity.model_finished(self.agent.run_usage)
                        flush_text()
                        self.console.print(Panel(_plain(event.message), title="error", border_style="red"))
                    elif isinstance(event, FinalAnswer):
                        activity.model_finished(self.agent.run_usage)
                        text = render_citations(text, self.citations) if text else text
                        self._live.stop()
                        flush_text()
                        if event.status == "max_steps":
                            self.console.print(f"[yellow]stopped after {self.agent.max_steps} steps[/yellow]")
                        self.console.print(Text(activity.summary(), style="dim"))
            finally:
                # Interrupted or failed: what was written stays on the screen, once.
                self._live.stop()
                self._live = None
                flush_text()

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

        live = self._live
        if live is not None:  # the image is written straight to the terminal: not under the live view
            live.stop()
        try:
            show_image_inline(path, self.console, workspace=self.agent.workspace)  # no link followed
        except Exception:  # inline display is a nicety; the path is already printed
            pass
        finally:
            if live is not None:
                live.start()

    # ---- saving ----------------------------------------------------------------------------

    def save_conversation(self) -> None:
        """The autosave after a turn; a failure is said once and the chat goes on."""
        if self.autosave is None:
            return
        try:
            self.autosave.save()
        except OSError as exc:
            if not self._save_failed:
                where = self.autosave.path or self.autosave.root
                self.console.print(_plain(f"cannot save this chat to {where}: {exc.strerror or exc} "
                                          "(use /save FILE to keep it)", "red"))
            self._save_failed = True
        else:
            self._save_failed = False

    # ---- slash commands ------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """Run a slash command; False means leave."""
        name, _, arg = line.strip().partition(" ")
        arg = arg.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.console.print(Text(HELP))
        elif name == "/clear":
            self.save_conversation()
            self.agent.reset()
            self.citations.clear()
            if self.autosave is not None:
                self.autosave.new_conversation()
            self.console.print("[dim]conversation cleared; a new one starts (the last one is saved)[/dim]")
        elif name == "/tools":
            if not self.agent.tools:
                self.console.print("no tools (start with --tools python,browser,...)")
            for tool in self.agent.tools.values():
                first = tool.description.splitlines()[0] if tool.description else ""
                origin = getattr(tool, "origin", None)  # an MCP tool: which server, with which rights
                where = _plain(f"  [{origin}]", "dim") if isinstance(origin, str) else ""
                self.console.print(Text.assemble(_plain(tool.name, "bold"), " — ", _plain(first), where))
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
                self.console.print("[red]usage: /load FILE (or the name of a saved chat)[/red]")
            else:
                path = session_file_for(Path(arg).expanduser())
                self.save_conversation()  # the conversation being replaced stays saved
                try:
                    self.agent.load(path)
                except SessionFileError as exc:  # the conversation so far is kept as it was
                    self.console.print(_plain(exc, "red"))
                else:
                    self.citations.clear()  # they belonged to the conversation just replaced
                    if self.autosave is not None:
                        self.autosave.adopt(path)
                    self.console.print(_plain(f"loaded {len(self.agent.history)} messages from {path}"))
        else:
            self.console.print(Text.assemble(_plain(f"unknown command {name}", "red"), " — /help lists them"))
        return True

    # ---- the loop ------------------------------------------------------------------------

    def _prompt_session(self) -> Any:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.completion import CompleteEvent
        from prompt_toolkit.history import FileHistory, InMemoryHistory
        from prompt_toolkit.key_binding import KeyBindings

        completer = _slash_completer()
        keys = KeyBindings()

        @keys.add("tab")
        def _complete(event: Any) -> None:
            # prompt_toolkit's own Tab is dropped while the completions for the text just typed
            # are still being made ("/sa" and Tab in one read): a single match is put in now.
            buffer = event.current_buffer
            state = buffer.complete_state
            if state is not None and state.completions:
                buffer.complete_next()
                return
            found = list(completer.get_completions(buffer.document, CompleteEvent(completion_requested=True)))
            if len(found) == 1:
                buffer.apply_completion(found[0])
            elif found:
                buffer.start_completion(insert_common_part=True)

        # Alt-Enter arrives as Esc then Enter in most terminals: a new line, not "send".
        @keys.add("escape", "enter")
        def _newline(event: Any) -> None:
            event.current_buffer.insert_text("\n")

        history = FileHistory(str(self.history_file)) if self.history_file else InMemoryHistory()
        return PromptSession(
            history=history, completer=completer, complete_while_typing=True, key_bindings=keys,
            reserve_space_for_menu=len(COMMANDS),
            prompt_continuation=lambda width, line_number, wrapped: "… ".rjust(width),
        )

    def banner(self) -> None:
        model_name = getattr(self.agent.model, "name", "model")
        tools = ", ".join(self.agent.tools) or "none"
        self.console.print(Text.assemble(("glm-agent", "bold"), " · model ", _plain(model_name, "cyan"),
                                         " · tools ", _plain(tools, "cyan"), " · /help"))
        asked = [m.content for m in self.agent.history if m.role == "user"]
        if asked:
            where = self.autosave.path.stem if self.autosave and self.autosave.path else self.agent.session_id
            last = " ".join(safe_text(asked[-1]).split())
            last = last if len(last) <= 60 else last[:59] + "…"
            self.console.print(_plain(f"continuing {where} · {len(self.agent.history)} messages · last asked: {last}",
                                      "dim"))

    async def run(self) -> None:
        session = self._prompt_session()
        self.banner()
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
                self.console.print(Text("interrupted", style="yellow"))
            except Exception as exc:  # never leave the chat because one turn failed
                self.console.print(Panel(_plain(f"{type(exc).__name__}: {exc}"), title="error", border_style="red"))
            finally:
                try:
                    loop.remove_signal_handler(signal.SIGINT)
                except (NotImplementedError, RuntimeError):
                    pass
                self.save_conversation()
        self.save_conversation()
        if self.autosave is not None and self.autosave.path is not None and not self._save_failed:
            self.console.print(_plain(f"saved as {self.autosave.path.stem} · continue with: glm-agent chat --continue",
                                      "dim"))
        self.console.print("[dim]bye[/dim]")
