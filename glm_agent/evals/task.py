"""The suite contract: list samples, build one sample's environment, judge it, aggregate.

A `Suite` knows its tasks and its environment; the runner knows nothing about either. For one
sample the runner asks the suite for a `SampleEnv` (the tools the agent gets, the system prompt,
the user prompt), runs an `Agent` with it, then asks the env to judge the run. This mirrors
AgentBench's `get_indices / start_sample / calculate_overall` with the HTTP layers removed.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from glm_agent.core.errors import GlmAgentError
from glm_agent.evals.record import STATUSES, EvalRecord, Status

if TYPE_CHECKING:
    from glm_agent.core.contracts import Tool
    from glm_agent.core.events import RunResult
    from glm_agent.core.messages import Message

__all__ = [
    "Status",
    "STATUSES",
    "Sample",
    "Judgement",
    "SampleEnv",
    "Suite",
    "TaskFileError",
    "UnsupportedSample",
    "EnvironmentSetupError",
    "read_jsonl",
    "read_json",
    "final_text",
    "tool_calls_of",
    "select_samples",
    "json_item_lines",
    "wilson",
]

class TaskFileError(GlmAgentError, ValueError):
    """A task file is malformed; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int | None, problem: str):
        self.path = str(path)
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")


class EnvironmentSetupError(GlmAgentError, RuntimeError):
    """The sample's environment could not be built here (an init script failed); the runner
    records status `task_error` with this message and does not count the sample."""


class UnsupportedSample(Exception):
    """This environment cannot run or judge the sample (it needs the network, a script that
    is not shipped, a gold answer that is broken upstream...); the message is the reason.

    Raised by `Suite.setup` or `Suite.judge` (or return `Judgement.unsupported(reason)` from
    `judge`); the runner records status `unsupported`, the sample stays out of the score and the
    report counts the reasons. A control-flow signal between a suite and the runner, never shown
    to a user as an error.
    """

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Sample:
    """One task. `gold` holds whatever the suite's judge and oracle need."""

    id: str
    prompt: str
    category: str = ""
    gold: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # "file:line" the sample came from, for error messages


@dataclass
class Judgement:
    """A score in [0, 1]; `passed` is what success rate counts (score == 1 unless a suite says)."""

    score: float
    passed: bool | None = None
    detail: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    # "unsupported": the judge cannot decide here (see `UnsupportedSample`); the score is ignored.
    status: str | None = None

    @classmethod
    def unsupported(cls, reason: str, **info: Any) -> "Judgement":
        return cls(0.0, passed=False, detail=reason, info=info, status="unsupported")

    def __post_init__(self) -> None:
        self.score = float(self.score)
        # A score outside [0, 1] would poison every average; the runner records it as a judge failure.
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a judgement's score must be in [0, 1], got {self.score!r}")
        if self.passed is None:
            self.passed = self.score >= 1.0 - 1e-9


@dataclass
class SampleEnv:
    """What one sample's agent runs against.

    `stop_after_tools`: the run is meant to end after the first tool-call turn (function-calling
    suites record calls without executing them), so reaching the step limit is a normal end.
    `cleanups` run after judging (stop a sandbox, delete a database).
    """

    tools: list["Tool"]
    system: str | None = None
    prompt: str = ""
    max_steps: int = 10
    stop_after_tools: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Callable[[], Any]] = field(default_factory=list)

    async def close_tools(self) -> None:
        for tool in self.tools:
            try:
                await tool.aclose()
            except Exception:  # closing is best effort: the sample is already judged
                pass

    async def close(self) -> None:
        for fn in reversed(self.cleanups):
            try:
                value = fn()
                if inspect.isawaitable(value):
                    await value
            except Exception:
                pass


class Suite:
    """Base class of a suite. Subclasses implement `load`, `setup`, `judge`, `oracle`.

    `data` is an optional path to the public benchmark's own files (AgentBench JSON/JSONL, a
    BFCL data folder, a GSM8K JSONL); without it the suite runs the tasks it ships.
    """

    name: str = ""
    description: str = ""
    max_steps: int = 10
    sample_timeout: float = 300.0
    # Metric name shown in reports: success rate for most suites, mean reward for `web`.
    metric: str = "success rate"
    category_order: tuple[str, ...] = ()  # how report.md lists the categories (else alphabetically)

    def __init__(self, data: str | Path | None = None, **options: Any):
        self.data = Path(data) if data else None
        self.options = options
        self._samples: list[Sample] | None = None

    # -- samples ---------------------------------------------------------------------------
    def load(self) -> list[Sample]:
        raise NotImplementedError

    def samples(self) -> list[Sample]:
        """The suite's tasks; any problem with the task file is a `TaskFileError` naming it."""
        if self._samples is None:
            where = self.data or self.name
            try:
                samples = self.load()
            except TaskFileError:
                raise
            except UnicodeDecodeError:
                raise TaskFileError(where, None, "not UTF-8 text (a binary file?)") from None
            except OSError as exc:
                raise TaskFileError(exc.filename or where, None, f"cannot be read: {exc.strerror or exc}") from None
            except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
                # A task file of an unexpected shape (the loaders check the usual mistakes).
                raise TaskFileError(where, None, f"not a {self.name} task file: {type(exc).__name__}: {exc}") from None
            if not samples:
                raise TaskFileError(where, None, "no tasks in this file")
            seen: set[str] = set()
            for s in samples:
                if s.id in seen:
                    raise TaskFileError(s.source or self.name, None, f"duplicate sample id {s.id!r}")
                seen.add(s.id)
            self._samples = samples
        return self._samples

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start suite-wide resources (a web server). Called once before the first sample."""

    async def aclose(self) -> None:
        """Stop what `start` started."""

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        """Build the sample's environment and tools (fresh per sample)."""
        raise NotImplementedError

    async def judge(self, sample: Sample, env: SampleEnv, result: "RunResult") -> Judgement:
        raise NotImplementedError

    def oracle(self, sample: Sample) -> list[Any]:
        """ScriptedModel turns that replay the sample's gold actions."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Options of this suite that change its scores (e.g. the judge mode): recorded in the run
        folder's config.json, and resuming with other values is refused."""
        return {}

    def aggregate(self, records: list[EvalRecord]) -> dict[str, Any]:
        """Suite-level summary beyond the generic one: per-category scores with 95% Wilson
        intervals, in `category_order` (the rest alphabetically)."""
        by_cat: dict[str, list[float]] = {}
        for r in records:
            if r.score is not None:
                by_cat.setdefault(r.category or "all", []).append(r.score)
        order = list(self.category_order)
        out = {}
        for cat in sorted(by_cat, key=lambda c: (order.index(c) if c in order else len(order), c)):
            scores = by_cat[cat]
            out[cat] = {"n": len(scores), "score": sum(scores) / len(scores), "ci95": list(wilson(sum(scores), len(scores)))}
        return {"per_category": out}


# -- helpers shared by suites ------------------------------------------------------------------
def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON names the file and line."""
    path = Path(path)
    out = []
    for lineno, raw in enumerate(_read_bytes(path).split(b"\n"), 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError:
            raise TaskFileError(path, lineno, "not UTF-8 text (a binary file?)") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TaskFileError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise TaskFileError(path, lineno, "invalid JSON: nested too deeply") from None
        if not isinstance(obj, dict):
            raise TaskFileError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        out.append((lineno, obj))
    return out


def read_json(path: str | Path) -> Any:
    path = Path(path)
    raw = _read_bytes(path)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TaskFileError(path, raw[: exc.start].count(b"\n") + 1, "not UTF-8 text (a binary file?)") from None
    if not text.strip():
        raise TaskFileError(path, None, "the file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaskFileError(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise TaskFileError(path, None, "invalid JSON: nested too deeply") from None


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise TaskFileError(path, None, "is a folder, not a task file")
    if not path.is_file():
        raise TaskFileError(path, None, "file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TaskFileError(path, None, f"cannot be read: {exc.strerror or exc}") from None


def json_item_lines(path: str | Path, count: int) -> list[int]:
    """Best-effort line numbers of the top-level items of a JSON array (for error messages)."""
    text = Path(path).read_text(encoding="utf-8-sig")
    lines, depth, in_str, esc, line = [], 0, False, False, 1
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            if depth == 1:
                lines.append(line)
            depth += 1
        elif ch in "]}":
            depth -= 1
    lines += [None] * (count - len(lines))  # type: ignore[list-item]
    return lines[:count]



def final_text(result: "RunResult") -> str:
    """The agent's answer: the run output, else the last assistant text."""
    if result.output:
        return result.output
    for m in reversed(result.messages):
        if getattr(m, "role", "") == "assistant" and m.content:
            return m.content
    return ""


def tool_calls_of(messages: Iterable["Message"]) -> list[Any]:
    return [c for m in messages if getattr(m, "role", "") == "assistant" for c in m.tool_calls]


def select_samples(samples: list[Sample], limit: int | None) -> list[Sample]:
    """The first `limit` samples, taken round-robin across categories so small runs cover all."""
    if limit is None or limit >= len(samples):
        return list(samples)
    groups: dict[str, list[Sample]] = {}
    for s in samples:
        groups.setdefault(s.category, []).append(s)
    queues = list(groups.values())
    picked: list[Sample] = []
    i = 0
    while len(picked) < limit:
        q = queues[i % len(queues)]
        idx = i // len(queues)
        if idx < len(q):
            picked.append(q[idx])
        i += 1
        if i > len(samples) * max(1, len(queues)):
            break
    order = {id(s): n for n, s in enumerate(samples)}
    return sorted(picked, key=lambda s: order[id(s)])


def wilson(successes: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion (works for fractional successes of mean rewards)."""
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))

