"""`math`: GSM8K-style word problems solved with the `python` tool, judged numerically.

Task line (GSM8K `test.jsonl`): `question`, `answer` whose last line is `#### <number>`. Our own
tasks add `id` and `code` (a gold solution the oracle runs in the python tool). The judge reads
the number from the agent's answer (`#### n`, `\\boxed{n}`, "answer is n", else the last number)
and compares it with the gold number, ignoring commas, currency signs, percent and units.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.messages import ToolCall
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, final_text, read_jsonl

__all__ = ["MathSuite", "load_gsm8k", "gold_number", "extract_number", "numbers_match", "python_tool"]

SYSTEM = (
    "You solve math word problems. Do not compute in your head: always call the `python` tool "
    "first to do the calculation (print the result). When you are done, reply without calling a tool and end with a line `#### <number>` "
    "giving only the final numeric answer."
)

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"


def gold_number(answer: str) -> str | None:
    m = re.search(r"####\s*(.+?)\s*$", answer.strip())
    return m.group(1).replace(",", "").strip() if m else None


def _clean(text: str) -> float | None:
    text = text.replace(",", "").replace("$", "").replace("€", "").replace("£", "").strip()
    m = re.search(_NUM, text)
    if not m:
        return None
    try:
        return float(m.group(0).replace(",", ""))
    except ValueError:
        return None


def extract_number(text: str) -> float | None:
    """The final numeric answer in a model's reply."""
    if not text:
        return None
    for pattern in (r"####\s*([^\n]+)", r"\\boxed\{([^}]*)\}", r"answer\s*(?:is|=|:)\s*([^\n]+)"):
        found = re.findall(pattern, text, re.I)
        if found:
            value = _clean(found[-1])
            if value is not None:
                return value
    numbers = re.findall(_NUM, text.replace("$", ""))
    return _clean(numbers[-1]) if numbers else None


def numbers_match(got: float | None, want: str | float) -> bool:
    if got is None:
        return False
    try:
        target = float(str(want).replace(",", "").replace("$", ""))
    except ValueError:
        return False
    return abs(got - target) <= max(1e-4, 1e-6 * abs(target))


def load_gsm8k(path: str | Path, *, prefix: str | None = None) -> list[Sample]:
    path = Path(path)
    prefix = prefix or path.stem
    samples = []
    for lineno, obj in read_jsonl(path):
        for key in ("question", "answer"):
            if key not in obj:
                raise TaskFileError(path, lineno, f"missing field {key!r}")
        number = gold_number(str(obj["answer"]))
        if number is None:
            raise TaskFileError(path, lineno, "field 'answer' has no final '#### <number>' line")
        try:
            float(number)
        except ValueError:
            raise TaskFileError(path, lineno, f"final answer {number!r} is not a number") from None
        samples.append(
            Sample(
                id=str(obj.get("id") or f"{prefix}-{lineno}"),
                prompt=str(obj["question"]).strip(),
                category=str(obj.get("category") or "gsm8k"),
                gold={"number": number, "code": obj.get("code")},
                source=f"{path}:{lineno}",
            )
        )
    return samples


def python_tool(**options: Any) -> Any:
    """The project's sandboxed `python` tool (one Jupyter kernel per sample)."""
    from glm_agent.tools.python import PythonTool

    return PythonTool(**options)


class MathSuite(Suite):
    name = "math"
    description = "GSM8K-style word problems with the sandboxed python tool"
    max_steps = 6
    sample_timeout = 300.0

    def load(self) -> list[Sample]:
        if self.data:
            return load_gsm8k(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "math.jsonl") as path:
            return load_gsm8k(path, prefix="math")

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        tool = python_tool(**self.options.get("python", {}))
        return SampleEnv(tools=[tool], system=SYSTEM, prompt=sample.prompt, max_steps=self.max_steps)

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        got = extract_number(final_text(result))
        ok = numbers_match(got, sample.gold["number"])
        return Judgement(float(ok), detail=f"answer {got!r} vs gold {sample.gold['number']}", info={"answer": got})

    def oracle(self, sample: Sample) -> list[Any]:
        code = sample.gold.get("code") or f"print({sample.gold['number']})"

        def answer(messages: list[Any]) -> str:
            observed = messages[-1].content if messages else ""
            numbers = re.findall(_NUM, observed)
            value = numbers[-1].replace(",", "") if numbers else "unknown"
            return f"The computation gives {value}.\n#### {value}"

        return [ToolCall(name="python", arguments={"code": code}), answer]

