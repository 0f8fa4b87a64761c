"""`EvalRecord`: one finished sample, one line of a run folder's `runs.jsonl`.

The runner writes it, the report, compare and resume read it back. Reading validates every
field, so a hand-edited or damaged line (a score that is not a number, a missing suite) is
rejected where it is read instead of crashing the report later.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Status", "STATUSES", "UNSUPPORTED", "EvalRecord", "record_problem"]

# How a sample ended: the first three are judged, the next three score 0, the last three are
# left out of the score. `unsupported`: this environment cannot run the task (it needs the
# network, a script that is not shipped...); `unsupported_judge` is its name in older run folders.
Status = Literal[
    "completed",
    "task_limit_reached",
    "invalid_action",
    "context_limit",
    "agent_error",
    "timeout",
    "unsupported",
    "unsupported_judge",
    "task_error",
]
STATUSES: tuple[str, ...] = get_args(Status)
# Not judged, not in the score, and not a failure of the task's environment either.
UNSUPPORTED: frozenset[str] = frozenset({"unsupported", "unsupported_judge"})


class EvalRecord(BaseModel):
    """What happened to one sample: how it ended, its score and the whole trajectory."""

    # Unknown keys are kept (newer writers may add fields); ids written as numbers still load.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True)

    suite: str = Field(min_length=1)
    id: str = Field(min_length=1)
    status: Status
    category: str = ""
    model: str = ""
    seed: int = 0
    # None = not judged (unsupported, task_error): not counted in the score.
    score: Optional[float] = Field(default=None, ge=0.0, le=1.0, allow_inf_nan=False)
    passed: Optional[bool] = None
    detail: str = ""
    judge: dict[str, Any] = Field(default_factory=dict)
    output: str = ""
    error: Optional[str] = None
    steps: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    tool_calls: int = Field(default=0, ge=0)
    invalid_calls: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    prompt: str = ""
    system: Optional[str] = None
    messages: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        """(suite, id): what identifies a sample across runs."""
        return (self.suite, self.id)

    def to_line(self) -> str:
        """The record as one JSON line (no newline). Judge info the suite left as arbitrary
        objects is written as text rather than failing the sample."""
        return json.dumps(self.model_dump(mode="python"), ensure_ascii=False, default=str)


def record_problem(exc: ValidationError) -> str:
    """A validation error as one short phrase: which field is wrong and why."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first.get("loc", ()))
    if first.get("type") == "missing":
        return f"missing field {field!r}"
    if first.get("type") == "model_type":
        return f"expected a JSON object, got {type(first.get('input')).__name__}"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"field {field!r}: {first.get('msg', 'invalid')}{more}"
