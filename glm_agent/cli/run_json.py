"""`glm-agent run --json`: the run as JSON Lines, one record per line, written as it happens.

The agent streams text token by token; here each step's text is merged into one `step` record
that also carries the step's token usage and time, and the `final` record carries the totals.
The format is described for the user in `FORMAT_HELP` (shown by `glm-agent run --help`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from glm_agent.core.terminal import safe_json

__all__ = ["JsonLinesLog", "FORMAT_HELP"]

FORMAT_HELP = """\
With --json, stdout is JSON Lines: one object per line, printed as the run goes.

{"type": "step", "step": 1, "text": "...", "usage": {"prompt_tokens": 812, "completion_tokens": 25}, "seconds": 1.9}
: one model call: its whole text, its tokens, its time (the first step includes loading a local model).

{"type": "tool_call", "step": 1, "call": {"id", "name", "arguments"}} and
{"type": "tool_result", "step": 1, "call": {...}, "result": {"content", "is_error", ...}, "seconds": 0.4}
: each tool call of that step, and its observation.

{"type": "error", "step": 1, "message": "...", "error_type": "..."}
: the model failed; the run ends.

{"type": "final", "text": "...", "status": "completed", "steps": 2, "usage": {...}, "seconds": 3.2}
: always last: the answer, how the run ended (completed, max_steps, empty, error), and the totals."""


def _usage(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: int(now.get(key, 0)) - int(before.get(key, 0)) for key in ("prompt_tokens", "completion_tokens")}


class JsonLinesLog:
    """Feed it the agent's events (`event(e)`); it writes one JSON line per record.

    `usage()` returns the run's tokens so far (the agent's `run_usage`, which counts a model
    call as soon as it ends, before the next event arrives): a step's usage is the difference
    across it."""

    def __init__(self, write: Callable[[str], None], usage: Callable[[], dict[str, int]],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._write, self._usage, self._clock = write, usage, clock
        self._started = clock()
        self._step: int = 0
        self._open: dict[str, Any] | None = None  # the step whose model call is still streaming

    def _emit(self, record: dict[str, Any]) -> None:
        self._write(safe_json(json.dumps(record, ensure_ascii=False)))

    def _close_step(self) -> None:
        """The step's model call ended: write its record."""
        if self._open is None:
            return
        step, self._open = self._open, None
        self._emit({
            "type": "step", "step": step["step"], "text": "".join(step["text"]),
            "usage": _usage(self._usage(), step["usage"]), "seconds": round(self._clock() - step["started"], 3),
        })

    def event(self, event: Any) -> None:
        kind = event.type
        if kind == "text" and self._open is not None:
            self._open["text"].append(event.text)
            return
        self._close_step()  # anything but text means the model call is over
        if kind == "step":
            self._step = event.step
            self._open = {"step": event.step, "text": [], "usage": dict(self._usage()), "started": self._clock()}
        elif kind == "final":
            self._emit({
                "type": "final", "text": event.text, "status": event.status, "steps": self._step,
                "usage": _usage(self._usage(), {}), "seconds": round(self._clock() - self._started, 3),
            })
        else:  # tool_call, tool_result, error: as the agent gives them, with their step
            record = event.model_dump(mode="json")
            if isinstance(record.get("seconds"), float):
                record["seconds"] = round(record["seconds"], 3)
            self._emit({"type": record.pop("type"), "step": self._step, **record})
