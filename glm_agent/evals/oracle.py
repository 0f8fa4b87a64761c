"""Oracle agents: a `ScriptedModel` per sample replaying the suite's gold actions.

An oracle must score ~100% on every suite; that is how environments and judges are tested
without a real model. Turns may be callables that read the observations so far (e.g. answer
with the rows a gold query returned), so the environment is exercised, not bypassed.
"""

from __future__ import annotations

from typing import Any

from glm_agent.evals.task import Sample, Suite

__all__ = ["oracle_model", "OracleFactory"]


def oracle_model(suite: Suite, sample: Sample) -> Any:
    """A fresh ScriptedModel replaying `sample`'s gold actions in `suite`."""
    from glm_agent.models.scripted import ScriptedModel

    return ScriptedModel(suite.oracle(sample), name=f"oracle:{suite.name}")


class OracleFactory:
    """The runner's per-sample model source for `--model oracle`."""

    name = "oracle"

    def __call__(self, suite: Suite, sample: Sample) -> Any:
        return oracle_model(suite, sample)
