"""A run folder's `runs.jsonl`: append records, read them back, one record per sample.

The file is append-only: nothing ever rewrites it, so a line already saved is never lost.
Reading is forgiving line by line: a line that is not a record (torn by a crash, edited by
hand, not UTF-8) is skipped and reported as `FILE:LINE: why`, and its sample runs again on
resume; the new record is appended after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from glm_agent.core.errors import GlmAgentError
from glm_agent.evals.record import EvalRecord, record_problem

__all__ = [
    "RUNS_FILE",
    "RunFolderError",
    "RunsLog",
    "read_runs",
    "load_records",
    "append_record",
    "latest_records",
    "mixed_models_warning",
]

RUNS_FILE = "runs.jsonl"


class RunFolderError(GlmAgentError, ValueError):
    """A run folder cannot be used as asked; the message names the file and what to do."""


@dataclass
class RunsLog:
    """The records of a `runs.jsonl` and the lines that had to be skipped."""

    records: list[EvalRecord] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "FILE:LINE: why", for the user


def read_runs(folder: str | Path, *, require: bool = False) -> RunsLog:
    """Read `folder/runs.jsonl`. A missing file is an empty log, or a `RunFolderError` when
    `require` (a report of a folder that is not a run folder)."""
    folder = Path(folder)
    path = folder / RUNS_FILE
    if not path.exists():
        if not require:
            return RunsLog()
        if not folder.exists():
            raise RunFolderError(f"{folder}: no such folder")
        if not folder.is_dir():
            raise RunFolderError(f"{folder} is a file, not an eval run folder")
        raise RunFolderError(f"{folder} has no {RUNS_FILE}: not an eval run folder")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RunFolderError(f"{path}: cannot be read: {exc.strerror or exc}") from None
    log = RunsLog()
    lines = raw.split(b"\n")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        problem = None
        try:
            log.records.append(EvalRecord.model_validate(json.loads(line.decode("utf-8"))))
            continue
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        except json.JSONDecodeError as exc:
            torn = lineno == len(lines)  # no newline after it: cut off mid-write
            problem = "cut off (the run was killed while writing it)" if torn else f"invalid JSON: {exc.msg}"
        except ValidationError as exc:
            problem = f"not an eval record: {record_problem(exc)}"
        except RecursionError:
            problem = "invalid JSON: nested too deeply"
        log.skipped.append(f"{path}:{lineno}: skipped, {problem}")
    return log


def load_records(folder: str | Path) -> list[EvalRecord]:
    """The valid records of `folder/runs.jsonl` (see `read_runs` for the skipped lines)."""
    return read_runs(folder).records


def append_record(folder: str | Path, record: EvalRecord) -> None:
    """Append one record as a line; a torn last line gets its newline first, so the new record
    starts a line of its own and the torn one stays as it was."""
    path = Path(folder) / RUNS_FILE
    with path.open("ab") as f:
        if f.tell() > 0:
            with path.open("rb") as tail:
                tail.seek(-1, 2)
                if tail.read(1) != b"\n":
                    f.write(b"\n")
        f.write(record.to_line().encode("utf-8") + b"\n")
        f.flush()


def latest_records(records: list[EvalRecord]) -> list[EvalRecord]:
    """One record per (suite, id): the last one written wins."""
    by_key: dict[tuple[str, str], EvalRecord] = {}
    for r in records:
        by_key[r.key] = r
    return list(by_key.values())


def mixed_models_warning(records: list[EvalRecord]) -> str | None:
    """A warning when one folder's records come from several models (folders written before
    resuming was restricted to one configuration); None when they do not."""
    counts: dict[str, int] = {}
    for r in latest_records(records):
        counts[r.model] = counts.get(r.model, 0) + 1
    if len(counts) < 2:
        return None
    listed = ", ".join(f"{m or '(unnamed)'!r} ({n} samples)" for m, n in sorted(counts.items()))
    return f"the records mix models {listed}: the scores merge them; run each model into its own folder"
