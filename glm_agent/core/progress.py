"""What a model is busy with while nothing streams: loading, reading the prompt, generating.

On a CPU a local model may be silent for a minute (loading weights, processing a long prompt,
holding back text that may turn out to be a tool call). A model reports these phases with
`report_progress`; whoever wants to show them (the chat's spinner) installs a handler with
`progress_handler` around the call. Nothing is reported when no handler is installed, and the
`ChatModel` contract is unchanged: reporting is optional for backends and for callers.

The handler lives in a context variable, so it follows the task that streams the model; a
backend that works in a thread of its own runs that thread in a copy of the caller's context
(`contextvars.copy_context().run`). Handlers may be called from such a thread: keep them short
and thread-safe (store the phase, draw it elsewhere).
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, TextIO

__all__ = ["Phase", "ModelProgress", "report_progress", "progress_handler", "listening", "fraction_reporter", "duration"]

# loading: reading weights; preparing: one-time work before the first load (quantizing a
# model into the cache), `done` of `total` units after `elapsed_s`; prompt: processing the
# prompt (prefill), `tokens` long; generating: the first new token is out (text may still be
# held back by the parser).
Phase = Literal["loading", "preparing", "prompt", "generating"]


@dataclass(frozen=True)
class ModelProgress:
    phase: Phase
    tokens: int = 0
    done: int = 0
    total: int = 0
    elapsed_s: float = 0.0

    @property
    def fraction(self) -> float | None:
        """Share of the work done, 0..1; None when the work has no known size."""
        return min(1.0, self.done / self.total) if self.total > 0 else None

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far; None until there is a rate to go by."""
        if not self.total or self.done <= 0 or self.elapsed_s < 1.0:
            return None
        return max(0.0, self.elapsed_s * (self.total - self.done) / self.done)

    def describe(self) -> str:
        """'42%, about 1 min 10 s left' (or just '42%' before there is a rate)."""
        if self.fraction is None:
            return ""
        text = f"{self.fraction:.0%}"
        eta = self.eta_s
        if eta is not None and self.done < self.total:
            text += f", about {duration(eta)} left"
        return text


def duration(seconds: float) -> str:
    """'45 s', '3 min 10 s': rounded to 5 s above a minute (an ETA is no more precise)."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    s = int(round(seconds / 5) * 5)
    return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")


_handler: ContextVar[Callable[[ModelProgress], None] | None] = ContextVar("glm_agent_progress", default=None)


def listening() -> bool:
    """Whether a handler is installed here (then a terminal progress bar of one's own would
    fight the display that handler drives)."""
    return _handler.get() is not None


def report_progress(phase: Phase, tokens: int = 0, *, done: int = 0, total: int = 0, elapsed_s: float = 0.0) -> bool:
    """Tell the installed handler, if any, what the model is doing now; True if there was one.
    Never raises: a display problem must not break generation."""
    handler = _handler.get()
    if handler is None:
        return False
    try:
        handler(ModelProgress(phase, tokens, done, total, elapsed_s))
    except Exception:  # the handler's own bug: ignored, generation goes on
        pass
    return True


def fraction_reporter(
    phase: Phase, fallback: str | None = None, *, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
) -> Callable[[int, int], None]:
    """A `(done, total)` callback for long one-time work (engine code takes plain callbacks)
    that reports `phase` with the time spent so far, so a display can show an ETA.

    With no handler installed (a script, `glm-agent run`, a server) and a `fallback` label,
    it prints `label: 40%, about 1 min left` to stderr at every tenth instead, so a long
    silence never looks like a hang there either.
    """
    start = clock()
    printed = [-1]

    def step(done: int, total: int) -> None:
        elapsed = clock() - start
        if report_progress(phase, done=done, total=total, elapsed_s=elapsed) or fallback is None or total <= 0:
            return
        tenth = min(10, done * 10 // total)
        if tenth == printed[0]:
            return
        printed[0] = tenth
        out = stream or sys.stderr
        text = ModelProgress(phase, done=done, total=total, elapsed_s=elapsed).describe()
        try:
            print(f"{fallback}: {text}", file=out, flush=True)
        except (OSError, ValueError):  # a closed stderr: progress is optional
            pass

    return step


@contextmanager
def progress_handler(handler: Callable[[ModelProgress], None] | None) -> Iterator[None]:
    """Install `handler` for model calls made inside this block (in this task or thread)."""
    token = _handler.set(handler)
    try:
        yield
    finally:
        _handler.reset(token)
