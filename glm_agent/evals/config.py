"""A run folder's `config.json`, and the rule for resuming into a folder.

A folder holds one configuration: one model with one set of settings that change results
(seed, generation settings, step limit, timeout, each suite's task file). Resuming with any of
them different would merge two configurations into one score, so it is refused before
anything is written. What only widens or paces a run (more suites, a larger `--limit`,
`--concurrency`) may change between resumes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from glm_agent.evals.record import record_problem
from glm_agent.evals.runs import RUNS_FILE, RunFolderError, RunsLog, read_runs

__all__ = ["CONFIG_FILE", "RunConfig", "ResumeConflictError", "read_config", "check_resume", "write_config"]

CONFIG_FILE = "config.json"


class ResumeConflictError(RunFolderError):
    """The run folder holds a run of another model or other settings."""


class RunConfig(BaseModel):
    """What `config.json` records. Older folders lack `generation`: it is then not compared."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    suites: list[str] = Field(default_factory=list)
    data: dict[str, Optional[str]] = Field(default_factory=dict)  # suite -> task file (None: shipped tasks)
    limit: Optional[int] = None
    concurrency: int = 1
    seed: int = 0
    timeout: Optional[float] = None
    max_steps: Optional[int] = None
    generation: Optional[dict[str, Any]] = None  # generation settings but the seed
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)  # suite -> options that change scores
    resumed: int = 0

    def conflicts(self, new: "RunConfig") -> list[str]:
        """How `new` differs from this recorded configuration, as `what: old -> new` phrases."""
        diffs = []
        for name in ("model", "seed", "timeout", "max_steps"):
            old_value, new_value = getattr(self, name), getattr(new, name)
            if old_value != new_value:
                diffs.append(f"{_label(name)} {_show(old_value)} -> {_show(new_value)}")
        if self.generation is not None and new.generation is not None:
            for name in sorted(set(self.generation) & set(new.generation)):
                if self.generation[name] != new.generation[name]:
                    diffs.append(f"{name} {_show(self.generation[name])} -> {_show(new.generation[name])}")
        for suite in sorted(set(self.settings) & set(new.settings)):
            old_opts, new_opts = self.settings[suite], new.settings[suite]
            for name in sorted(set(old_opts) | set(new_opts)):
                if old_opts.get(name) != new_opts.get(name):
                    diffs.append(f"{suite} {name} {_show(old_opts.get(name))} -> {_show(new_opts.get(name))}")
        for suite in sorted(set(self.data) & set(new.data)):
            if _same_file(self.data[suite], new.data[suite]):
                continue
            diffs.append(f"{suite} tasks {_show_data(self.data[suite])} -> {_show_data(new.data[suite])}")
        return diffs


def _label(name: str) -> str:
    return {"max_steps": "max steps"}.get(name, name)


def _show(value: Any) -> str:
    return "default" if value is None else repr(value)


def _show_data(value: Optional[str]) -> str:
    return "shipped" if value is None else repr(value)


def _same_file(a: Optional[str], b: Optional[str]) -> bool:
    if a is None or b is None:
        return a == b
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def read_config(folder: str | Path) -> RunConfig | None:
    """`folder/config.json`, or None when there is none; a damaged one is a `RunFolderError`."""
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        return None
    try:
        return RunConfig.model_validate(json.loads(path.read_bytes().decode("utf-8")))
    except OSError as exc:
        problem = f"cannot be read: {exc.strerror or exc}"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as exc:
        problem = f"line {exc.lineno}: invalid JSON: {exc.msg}"
    except ValidationError as exc:
        problem = record_problem(exc)
    raise RunFolderError(f"{path}: {problem}")


def check_resume(folder: str | Path, config: RunConfig) -> RunsLog:
    """The folder's records, when `config` may run into it; else `ResumeConflictError`.

    Without a readable `config.json`, the models named in the records still have to match.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a run folder: choose another --out")
    try:
        old = read_config(folder)
    except RunFolderError as exc:
        raise ResumeConflictError(
            f"{exc}; it says how this folder was run, so it cannot be resumed: "
            f"fix or delete that file, or choose another --out"
        ) from None
    log = read_runs(folder)
    diffs = old.conflicts(config) if old is not None else []
    models = sorted({r.model for r in log.records} - {config.model})
    if models and not any(d.startswith("model ") for d in diffs):
        diffs.insert(0, f"model {', '.join(repr(m) for m in models)} (in {RUNS_FILE}) -> {config.model!r}")
    if diffs:
        raise ResumeConflictError(
            f"{folder} holds a run with other settings ({'; '.join(diffs)}): resuming would merge "
            "two configurations into one score. Choose another --out, or rerun with the folder's settings."
        )
    return log


def write_config(folder: str | Path, config: RunConfig) -> RunConfig:
    """Record `config`, merged with what the folder already ran (suites, task files)."""
    path = Path(folder) / CONFIG_FILE
    try:
        old = read_config(folder)
    except RunFolderError:
        old = None  # check_resume refused such a folder already; callers without it start afresh
    if old is not None:
        config = config.model_copy(update={
            "suites": sorted(set(old.suites) | set(config.suites)),
            "data": {**old.data, **config.data},
            "settings": {**old.settings, **config.settings},
            "resumed": old.resumed + 1,
        })
    path.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    return config
