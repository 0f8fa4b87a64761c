"""What the agent is busy with during a chat turn: a spinner line with the phase and the time
spent in it, and the speed line printed after each answer.

On a CPU, silences of a minute are normal (loading the model, reading a long prompt, text held
back until the parser knows it is not a tool call, the wait after a tool result): the spinner
says which one it is. A local model reports its phases through `glm_agent.core.progress`
(possibly from its worker thread: `on_progress` only stores them); the agent's events give
the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import Markdown
from rich.segment import Segment
from rich.text import Text

from glm_agent.core.progress import ModelProgress
from glm_agent.core.terminal import safe_text

__all__ = ["Activity", "TurnView"]

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
# Text that arrived this recently means the model is visibly writing, not thinking.
WRITING_GRACE_S = 1.0
BAR_CELLS = 20


@dataclass
class _Step:
    """One model call: when it started, what the model reported, when output first came."""

    started: float
    loading: float | None = None
    prompt: float | None = None
    prompt_tokens: int = 0
    preparing: ModelProgress | None = None  # first-use work (quantizing), with its progress
    generating: float | None = None
    first_text: float | None = None
    last_text: float | None = None


class Activity:
    """The state behind the spinner and the speed line, for one user turn."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.started = clock()
        self.step: _Step | None = None
        self.tools: dict[str, str] = {}  # call id -> tool name, while running
        self.tools_since = 0.0
        self._label = ("", 0.0)  # the label shown and since when
        self._usage = (0, 0)  # run_usage at the end of the last model call
        self.completion_tokens = 0
        self.decode_seconds = 0.0
        self.prompt_tokens = 0  # the last call's prompt: the size of the conversation
        self.prefill_tokens = 0
        self.prefill_seconds = 0.0

    # ---- what happens ----------------------------------------------------------------------

    def on_progress(self, progress: ModelProgress) -> None:
        """The model's own report (any thread): only store it."""
        step, now = self.step, self.clock()
        if step is None:
            return
        if progress.phase == "loading":
            step.loading = now
        elif progress.phase == "prompt":
            step.prompt_tokens = progress.tokens
            step.prompt = now
        elif progress.phase == "generating":
            step.generating = now
        elif progress.phase == "preparing":
            step.preparing = progress

    def step_started(self) -> None:
        self.step = _Step(started=self.clock())

    def text(self) -> None:
        if self.step is not None:
            now = self.clock()
            self.step.first_text = self.step.first_text or now
            self.step.last_text = now

    def model_finished(self, usage: dict[str, int]) -> None:
        """The model call of this step is over (a tool call, the answer or an error);
        `usage` is the agent's token count for the turn so far."""
        step, now = self.step, self.clock()
        self.step = None
        if step is None:
            return
        prompt = usage.get("prompt_tokens", 0) - self._usage[0]
        completion = usage.get("completion_tokens", 0) - self._usage[1]
        self._usage = (usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0))
        self.prompt_tokens = prompt or self.prompt_tokens
        self.completion_tokens += completion
        first = step.generating or step.first_text or step.started
        self.decode_seconds += max(0.0, now - first)
        if step.prompt is not None and step.generating is not None:
            self.prefill_tokens += step.prompt_tokens
            self.prefill_seconds += max(0.0, step.generating - step.prompt)

    def tool_started(self, call_id: str, name: str) -> None:
        if not self.tools:
            self.tools_since = self.clock()
        self.tools[call_id] = name

    def tool_finished(self, call_id: str) -> None:
        self.tools.pop(call_id, None)

    # ---- what it looks like ----------------------------------------------------------------

    def label(self) -> str:
        """The phase in words: 'loading the model', 'reading the prompt (1,234 tokens)' ..."""
        if self.tools:
            names = sorted(set(self.tools.values()))
            return "running " + ", ".join(f"`{safe_text(n)[:40]}`" for n in names)
        step, now = self.step, self.clock()
        if step is None:
            return "thinking"
        if step.last_text is not None and now - step.last_text < WRITING_GRACE_S:
            return "writing"
        if step.generating is not None or step.first_text is not None:
            return "thinking"
        if step.prompt is not None:
            return f"reading the prompt ({step.prompt_tokens:,} tokens)"
        if step.preparing is not None and (step.preparing.fraction or 0.0) < 1.0:
            return "preparing the model, first use only"
        if step.loading is not None or step.preparing is not None:
            return "loading the model"
        return "thinking"

    def detail(self) -> str:
        """What follows the time: a bar with the share done and an ETA while the model is
        prepared (apart from the label, so the phase's seconds keep counting)."""
        step = self.step
        if self.tools or step is None or step.prompt is not None or step.preparing is None:
            return ""
        fraction = step.preparing.fraction
        if fraction is None or fraction >= 1.0:
            return ""
        filled = int(fraction * BAR_CELLS)
        return "━" * filled + "╺" + "─" * (BAR_CELLS - filled - 1) + " " + step.preparing.describe()

    def line(self) -> Text:
        now = self.clock()
        label = self.label()
        if label != self._label[0]:
            self._label = (label, now)
        seconds = now - self._label[1]
        frame = FRAMES[int(now * 10) % len(FRAMES)]
        detail = self.detail()
        return Text(f"{frame} {label} · {seconds:.0f}s" + (f" · {detail}" if detail else ""), style="dim")

    def summary(self) -> str:
        """The speed line after an answer, as `ollama run --verbose` gives it, shortened."""
        total = self.clock() - self.started
        if not self.completion_tokens and not self.prompt_tokens:
            return f"{total:.1f}s"  # a backend that reports no usage: no made-up "0 tokens"
        parts = [_tokens(self.completion_tokens)]
        if self.completion_tokens and self.decode_seconds >= 0.05:
            parts.append(f"{self.completion_tokens / self.decode_seconds:.1f} tokens/s")
        if self.prompt_tokens:
            prompt = f"prompt {_tokens(self.prompt_tokens)}"
            if self.prefill_tokens and self.prefill_seconds >= 0.05:
                prompt += f" (read at {self.prefill_tokens / self.prefill_seconds:.0f} tokens/s)"
            parts.append(prompt)
        parts.append(f"{total:.1f}s")
        return " · ".join(parts)


def _tokens(n: int) -> str:
    return f"{n:,} token{'' if n == 1 else 's'}"


class TurnView:
    """The live part of the screen during a turn: the answer being written (its last screenful,
    the whole of it is printed when it is done) and the spinner line under it."""

    def __init__(self, activity: Activity):
        self.activity = activity
        self.markdown: Markdown | None = None
        self._cache: tuple[int, int, list[list[Segment]]] | None = None

    def show(self, markdown: Markdown | None) -> None:
        self.markdown = markdown
        self._cache = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.markdown is not None:
            key = (id(self.markdown), options.max_width)
            if self._cache is None or self._cache[:2] != key:
                lines = console.render_lines(self.markdown, options.update(height=None), pad=False)
                self._cache = (*key, lines)
            lines = self._cache[2]
            room = max(1, (options.height or console.size.height) - 2)
            for line in lines[-room:]:
                yield from line
                yield Segment.line()
        yield self.activity.line()
