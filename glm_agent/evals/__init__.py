"""AgentBench-style evaluation: suites (os, db, fc, math, web), a resumable runner, reports.

```python
from glm_agent.evals import make_suite, run_eval
summary = await run_eval([make_suite("db")], model, "runs/db", model_name="my-model")
```
Modules, each depending only on those listed before it: `record` (one sample's `EvalRecord`),
`task` (the suite contract), `runs` (a folder's `runs.jsonl`), `config` (its `config.json` and
the resume rule), `report`, `compare`, `runner`. Heavy dependencies (the sandbox, Chromium,
matplotlib) load only when a suite or report needs them.
"""

from glm_agent.evals.config import ResumeConflictError, RunConfig
from glm_agent.evals.record import EvalRecord
from glm_agent.evals.runner import EvalRunner, run_eval
from glm_agent.evals.runs import RunFolderError
from glm_agent.evals.suites import SUITE_NAMES, make_suite
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, UnsupportedSample

__all__ = [
    "EvalRunner",
    "run_eval",
    "make_suite",
    "SUITE_NAMES",
    "Suite",
    "Sample",
    "SampleEnv",
    "Judgement",
    "EvalRecord",
    "RunConfig",
    "TaskFileError",
    "UnsupportedSample",
    "RunFolderError",
    "ResumeConflictError",
]
