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


@pytest.fixture
def ev() -> SimpleNamespace:
    return SimpleNamespace(agentbench_file=agentbench_file, run_suite=run_suite, records=records,
                           per_sample=per_sample)
