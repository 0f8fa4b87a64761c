"""Run suites against a model: concurrency, per-sample timeout, statuses, resume, progress.

One asyncio process (no AgentBench HTTP controller): samples run under a semaphore, each in
its own workspace with its own tool instances. Every finished sample is appended to
`runs.jsonl` at once, so an interrupted run resumes by skipping the ids already there; a
folder of another model or other settings is refused (see `config`). An exception anywhere in
one sample marks that sample (`agent_error` / `task_error`), never the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from glm_agent.core.contracts import GenerationSettings
from glm_agent.core.errors import ContextOverflowError
from glm_agent.evals.config import RunConfig, check_resume, write_config
from glm_agent.evals.record import UNSUPPORTED, EvalRecord
from glm_agent.evals.report import write_report
from glm_agent.evals.runs import RUNS_FILE, RunFolderError, RunsLog, append_record, latest_records
from glm_agent.evals.task import (
    EnvironmentSetupError,
    Judgement,
    Sample,
    SampleEnv,
    Suite,
    UnsupportedSample,
    select_samples,
)

__all__ = ["ModelSource", "EvalRunner", "run_eval", "sample_seed"]

# A shared ChatModel, or a factory building one per sample (oracles are per-sample scripts).
ModelSource = Union[Any, Callable[[Suite, Sample], Any]]
_JUDGED = {"completed", "task_limit_reached", "invalid_action"}


def sample_seed(seed: int, suite: str, sample_id: str) -> int:
    """A stable per-sample seed: same run seed + same sample = same sampling, in any order."""
    digest = hashlib.sha256(f"{seed}:{suite}:{sample_id}".encode()).hexdigest()
    return int(digest[:8], 16)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80] or "sample"


@dataclass
class EvalRunner:
    """Runs `suites` with `model` into the run folder `out` (see `run_eval`)."""

    suites: list[Suite]
    model: ModelSource
    out: Path
    limit: int | None = None
    concurrency: int = 1
    seed: int = 0
    timeout: float | None = None  # per sample; None = each suite's own default
    max_steps: int | None = None  # override each suite's step limit
    model_name: str = ""  # recorded in every record; resuming needs the same name
    progress: bool = True
    keep_workspaces: bool = False
    # Generation settings for every sample; each sample gets its own seed (see `sample_seed`).
    settings: GenerationSettings | None = None
    _log: RunsLog | None = field(default=None, repr=False)

    # -- public ---------------------------------------------------------------------------
    def config(self) -> RunConfig:
        """What this run records in `config.json`, and what resuming must match."""
        settings = dataclasses.asdict(self.settings or GenerationSettings())
        settings.pop("seed", None)
        return RunConfig(
            model=self.model_name,
            suites=[s.name for s in self.suites],
            data={s.name: _data_path(s.data) for s in self.suites},
            settings={s.name: s.settings() for s in self.suites if s.settings()},
            limit=self.limit,
            concurrency=self.concurrency,
            seed=self.seed,
            timeout=self.timeout,
            max_steps=self.max_steps,
            generation=settings,
        )

    def prepare(self) -> RunsLog:
        """Check that this run may go into `out` (a new folder, or a run of the same model and
        settings to resume) and read what is there. `ResumeConflictError` or `RunFolderError`
        otherwise, before anything is written. `run` calls it when it was not called."""
        self.out = Path(self.out)
        self._log = check_resume(self.out, self.config())
        return self._log

    async def run(self) -> dict[str, Any]:
        previous = self._log if self._log is not None else self.prepare()
        self._log = None  # a second `run` checks the folder again
        try:
            self.out.mkdir(parents=True, exist_ok=True)
            write_config(self.out, self.config())
            (self.out / RUNS_FILE).touch()  # a run with nothing left to do still leaves a run folder
        except OSError as exc:
            raise RunFolderError(f"{exc.filename or self.out}: cannot write the run folder: {exc.strerror or exc}") from None
        done = {r.key for r in previous.records}
        plan: list[tuple[Suite, list[Sample]]] = []
        for suite in self.suites:
            chosen = select_samples(suite.samples(), self.limit)
            plan.append((suite, [s for s in chosen if (suite.name, s.id) not in done]))
        sem = asyncio.Semaphore(max(1, self.concurrency))
        lock = asyncio.Lock()
        with _ProgressUI(plan, previous.records, enabled=self.progress) as ui:
            for suite, samples in plan:
                if not samples:
                    continue
                try:
                    await suite.start()
                except Exception as exc:  # e.g. the shop cannot bind: every sample of it fails, not the run
                    for sample in samples:
                        record = self._blank(suite, sample)
                        record.detail = f"suite {suite.name} could not start: {exc}"
                        self._append(record)
                        ui.advance(suite.name, record)
                    await suite.aclose()
                    continue
                try:
                    async def one(sample: Sample, suite: Suite = suite) -> None:
                        async with sem:
                            record = await self.run_sample(suite, sample)
                        async with lock:
                            self._append(record)
                            ui.advance(suite.name, record)

                    await asyncio.gather(*(one(s) for s in samples))
                finally:
                    await suite.aclose()
        if not self.keep_workspaces:
            _remove_empty_dirs(self.out / "work")
        return write_report(self.out, suites={s.name: s for s in self.suites})

    async def run_sample(self, suite: Suite, sample: Sample) -> EvalRecord:
        """Run and judge one sample; never raises (except cancellation)."""
        from glm_agent.agent import Agent
        from glm_agent.core.messages import messages_adapter

        workspace = self.out / "work" / _safe(suite.name) / _safe(sample.id)
        if workspace.exists():
            shutil.rmtree(workspace, ignore_errors=True)
        workspace.mkdir(parents=True, exist_ok=True)
        record = self._blank(suite, sample)
        seed = record.seed
        started = time.perf_counter()
        env: SampleEnv | None = None
        agent = None
        try:
            try:
                env = await suite.setup(sample, workspace)
            except UnsupportedSample as exc:
                _update(record, status="unsupported", detail=str(exc))
                return record
            except EnvironmentSetupError as exc:
                _update(record, status="task_error", detail=f"environment setup failed: {exc}")
                return record
            except Exception as exc:
                _update(record, status="task_error", detail=f"environment setup failed: {type(exc).__name__}: {exc}",
                        error=traceback.format_exc(limit=6))
                return record
            record.prompt = env.prompt or sample.prompt
            record.system = env.system
            try:
                model = self._model_for(suite, sample)
                settings = dataclasses.replace(self.settings or GenerationSettings(), seed=seed)
                agent = Agent(
                    model,
                    tools=env.tools,
                    system=env.system,
                    # A suite that stops after the first tool-call turn keeps its own limit.
                    max_steps=env.max_steps if env.stop_after_tools else (self.max_steps or env.max_steps),
                    settings=settings,
                    workspace=workspace,
                    session_id=f"{suite.name}-{_safe(sample.id)}",
                )
            except UnsupportedSample as exc:  # an oracle with no gold that works here
                _update(record, status="unsupported", detail=str(exc))
                return record
            except Exception as exc:
                _update(record, status="agent_error", detail=f"could not build the agent: {exc}",
                        error=traceback.format_exc(limit=6))
                return record
            timeout = self.timeout or suite.sample_timeout
            result = None
            try:
                result = await asyncio.wait_for(agent.run(record.prompt), timeout)
            except asyncio.TimeoutError:
                _update(record, status="timeout", detail=f"no answer within {timeout:g} s")
            except Exception as exc:  # the agent itself crashed: this sample only
                _update(record, status=_status_for_exception(exc), detail=f"{type(exc).__name__}: {exc}",
                        error=traceback.format_exc(limit=8))
            if result is not None:
                _update(
                    record,
                    output=result.output,
                    steps=result.steps,
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    error=result.error,
                    messages=messages_adapter.dump_python(list(result.messages), mode="json"),
                )
                record.status = _status_for_result(result, env)
            else:
                history = list(getattr(agent, "history", []))
                record.messages = messages_adapter.dump_python(history, mode="json")
                record.steps = sum(1 for m in history if getattr(m, "role", "") == "assistant")
                _update(record, **getattr(agent, "run_usage", {}))  # what the cut-off run had cost so far
            calls, invalid = _count_calls(record.messages, {t.name for t in env.tools})
            _update(record, tool_calls=calls, invalid_calls=invalid)
            if record.status in _JUDGED and result is not None:
                try:
                    judgement = await suite.judge(sample, env, result)
                except UnsupportedSample as exc:
                    judgement = Judgement.unsupported(str(exc))
                except Exception as exc:
                    judgement = Judgement(0.0, detail=f"judge failed: {type(exc).__name__}: {exc}")
                    record.error = traceback.format_exc(limit=6)
                if judgement.status == "unsupported":
                    _update(record, status="unsupported", detail=judgement.detail, judge=judgement.info)
                else:
                    _update(record, score=judgement.score, passed=judgement.passed,
                        detail=judgement.detail, judge=judgement.info)
            elif record.status not in UNSUPPORTED and record.status != "task_error":
                _update(record, score=0.0, passed=False)
            return record
        finally:
            record.seconds = round(time.perf_counter() - started, 3)
            if agent is not None:
                try:
                    await agent.aclose()
                except Exception:
                    pass
            elif env is not None:
                await env.close_tools()
            if env is not None:
                await env.close()
            if not self.keep_workspaces:
                shutil.rmtree(workspace, ignore_errors=True)

    # -- internals -------------------------------------------------------------------------
    def _blank(self, suite: Suite, sample: Sample) -> EvalRecord:
        """A sample's record before it runs (status task_error until something better is known)."""
        return EvalRecord(
            suite=suite.name,
            id=sample.id,
            category=sample.category,
            model=self.model_name,
            seed=sample_seed(self.seed, suite.name, sample.id),
            status="task_error",
            prompt=sample.prompt,
        )

    def _model_for(self, suite: Suite, sample: Sample) -> Any:
        if hasattr(self.model, "stream"):
            return self.model
        return self.model(suite, sample)

    def _append(self, record: EvalRecord) -> None:
        append_record(self.out, record)


def _update(record: EvalRecord, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(record, name, value)


def _data_path(data: Path | None) -> str | None:
    """A suite's task file as recorded in config.json: absolute, so a resume from another
    directory compares the same file (a name that is not a path, like `bfcl`, stays as it is)."""
    if data is None:
        return None
    return str(data.resolve()) if data.exists() else str(data)


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            path.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass


def _status_for_exception(exc: BaseException) -> str:
    if isinstance(exc, ContextOverflowError):
        return "context_limit"
    return "agent_error"


def _status_for_result(result: Any, env: SampleEnv) -> str:
    status = result.status
    if status in ("completed", "empty"):  # an empty answer is judged like any other (and fails)
        return "completed"
    if status == "max_steps":
        if env.stop_after_tools:
            return "completed"
        if _last_turn_invalid(result.messages, {t.name for t in env.tools}):
            return "invalid_action"
        return "task_limit_reached"
    if status == "error":
        kind = getattr(result, "error_type", None) or ""
        if kind == "ContextOverflowError" or "ContextOverflow" in (result.error or ""):
            return "context_limit"
        return "agent_error"
    return "agent_error"  # cancelled


def _last_turn_invalid(messages: list[Any], tool_names: set[str]) -> bool:
    for m in reversed(messages):
        if getattr(m, "role", "") == "assistant":
            calls = m.tool_calls
            return bool(calls) and all(c.arguments_error or c.name not in tool_names for c in calls)
    return False


def _count_calls(messages: list[dict], tool_names: set[str]) -> tuple[int, int]:
    calls = invalid = 0
    for m in messages:
        if m.get("role") != "assistant":
            continue
        for c in m.get("tool_calls") or []:
            calls += 1
            if c.get("arguments_error") or c.get("name") not in tool_names:
                invalid += 1
    return calls, invalid


class _ProgressUI:
    """A rich progress bar per suite whose description carries the live score."""

    def __init__(self, plan: list[tuple[Suite, list[Sample]]], previous: list[EvalRecord], enabled: bool):
        self.enabled = enabled
        self.plan = plan
        self.stats: dict[str, list[float]] = {}
        for r in latest_records(previous):
            if r.score is not None:
                self.stats.setdefault(r.suite, []).append(r.score)
        self.progress = None
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_ProgressUI":
        if not self.enabled:
            return self
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(
            TextColumn("[bold]{task.fields[suite]:<6}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[score]}"),
            TimeElapsedColumn(),
        )
        self.progress.__enter__()
        for suite, samples in self.plan:
            self.tasks[suite.name] = self.progress.add_task(
                suite.name, total=len(samples), suite=suite.name, score=self._score(suite.name)
            )
        return self

    def _score(self, suite: str) -> str:
        values = self.stats.get(suite, [])
        if not values:
            return "score  -"
        return f"score {100 * sum(values) / len(values):5.1f}% ({len(values)})"

    def advance(self, suite: str, record: EvalRecord) -> None:
        if record.score is not None:
            self.stats.setdefault(suite, []).append(record.score)
        if self.progress is not None:
            self.progress.update(self.tasks[suite], advance=1, score=self._score(suite))

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)


async def run_eval(
    suites: list[Suite],
    model: ModelSource,
    out: str | Path,
    **options: Any,
) -> dict[str, Any]:
    """Run `suites` with `model` into folder `out`; returns the overall summary."""
    return await EvalRunner(suites=suites, model=model, out=Path(out), **options).run()
