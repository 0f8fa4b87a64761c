"""Shared helpers for the eval tests (a fixture, so the test modules need no package imports)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

AGENTBENCH = Path("/work/shared/data/agentbench")


def agentbench_file(name: str) -> Path:
    path = AGENTBENCH / name
    if not path.exists():
        pytest.skip(f"the AgentBench dev file {path} is not on this machine")
    return path


async def run_suite(suite: Any, model: Any, out: Path, **options: Any) -> dict:
    """Run one suite through the real runner into `out` (no progress bar)."""
    from glm_agent.evals.runner import run_eval

    options.setdefault("progress", False)
    return await run_eval([suite], model, out, **options)


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines() if line.strip()]


def per_sample(turns_for):
    """A runner model source: a fresh ScriptedModel per sample from `turns_for(suite, sample)`."""
    from glm_agent.models.scripted import ScriptedModel

    def factory(suite, sample):
        return ScriptedModel(turns_for(suite, sample))

    return factory


# AgentBench's checker file, as shipped in data/os_interaction/scripts/N/check/.
INTEGER_MATCH_PY = "from sys import argv\nif int(argv[1]) == int(argv[2]): exit(0)\nexit(1)"


def agentbench_os_layout(root: Path) -> Path:
    """A small copy of AgentBench's layout under `root`: `data/os_interaction/data/1/tasks.json`
    with `scripts/1/` (init, example and check files) and `configs/tasks/os.yaml`. Task 0 counts
    files (init file, example file, check list [null, integer-match]); task 1 is an action whose
    check list has no null (its check reads the answer as $1). Returns the os_interaction folder."""
    base = root / "data" / "os_interaction"
    files = {
        "scripts/1/init/make.sh": "mkdir -p /root/d && touch /root/d/a /root/d/b /root/d/c\n",
        "scripts/1/example/count.sh": "ls /root/d | wc -l\n",
        "scripts/1/check/integer-match.py": INTEGER_MATCH_PY,
        "scripts/1/check/made.sh": 'test -f /root/made && [ "$1" = yes ]\n',
    }
    for rel, text in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)
    tasks = [
        {"description": "How many files are in /root/d?", "create": {"local": "default", "init": {"file": "init/make.sh"}},
         "evaluation": {"check": [None, {"language": "python", "file": "check/integer-match.py"}],
                        "example": {"file": "example/count.sh"}}, "labels": ["file"]},
        {"description": "Create /root/made and say yes.",
         "evaluation": {"check": [{"file": "check/made.sh"}], "example": {"code": "touch /root/made; echo yes"}},
         "labels": ["action"]},
    ]
    (base / "data" / "1").mkdir(parents=True)
    (base / "data" / "1" / "tasks.json").write_text(json.dumps(tasks, indent=1))
    config = root / "configs" / "tasks" / "os.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(
        "os-std:\n  module: src.server.tasks.os_interaction.OSInteraction\n  parameters:\n    name: os-std\n"
        "    data_config:\n      files:\n        - problem_file: data/os_interaction/data/1/*.json\n"
        "          script_dir: data/os_interaction/scripts/1/\n          index_prefix: \"std-001-\"\n"
    )
    return base


@pytest.fixture
def ev() -> SimpleNamespace:
    return SimpleNamespace(agentbench_file=agentbench_file, run_suite=run_suite, records=records,
                           per_sample=per_sample, agentbench_os_layout=agentbench_os_layout)
