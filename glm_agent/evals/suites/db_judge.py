"""The db suite's answer judging: parse `Final Answer: [...]` and compare with the label.

AgentBench's rule for SELECT-type tasks: one value compares as a number or a string, several
as a set; "none", "null", "" and "[]" mean no value.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any

__all__ = ["parse_final_answer", "answers_match", "normalize", "rows_answer"]

_NONE = {"", "none", "null", "nan", "[]"}


def parse_final_answer(text: str) -> list[str] | None:
    """The answer list after `Final Answer:` (JSON or Python list, else the bare text)."""
    m = list(re.finditer(r"final answer\s*[:：]\s*", text, re.I))
    tail = text[m[-1].end():] if m else text
    tail = tail.strip().strip("`").strip()
    if not tail:
        return None
    bracket = re.search(r"\[.*\]", tail, re.S)
    if bracket:
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(bracket.group(0))
            except Exception:
                continue
            if isinstance(value, (list, tuple)):
                flat: list[str] = []
                for v in value:
                    flat.extend(str(x) for x in v) if isinstance(v, (list, tuple)) else flat.append(
                        "none" if v is None else str(v)
                    )
                return flat
    first = tail.splitlines()[0].strip().rstrip(".")
    return [first]


def normalize(value: Any) -> str:
    """A value as the judge compares it: trimmed, unquoted, lower case, numbers rounded."""
    text = str(value).strip().strip("'\"").strip()
    if text.lower() in _NONE:
        return "none"
    try:
        number = float(text.replace(",", "")) if re.fullmatch(r"-?[\d,]*\.?\d+(e-?\d+)?", text) else None
    except ValueError:
        number = None
    if number is not None:
        return repr(round(number, 6))
    return text.lower()


def answers_match(answer: list[str] | None, label: list[Any]) -> bool:
    """AgentBench's rule: one value compares as float or string, several as a set."""
    if answer is None:
        return False
    ans = [normalize(a) for a in answer]
    gold = [normalize(g) for g in label]
    ans = [a for a in ans if a != "none"] or ["none"]
    gold = [g for g in gold if g != "none"] or ["none"]
    if len(ans) == 1 and len(gold) == 1:
        return ans[0] == gold[0] or _close(answer[0], label[0])
    return set(ans) == set(gold)


def rows_answer(rows: list[tuple]) -> list[str]:
    """A query result as an answer list: every value of every row, in order."""
    from glm_agent.evals.suites.db_text import plain

    values = [str(plain(v)) for row in rows for v in row]
    return values or ["none"]


def _close(answer: Any, label: Any) -> bool:
    """Numbers agree to the label's precision (a label "64666.67" accepts 64666.6667)."""
    a, b = str(answer).strip().replace(",", ""), str(label).strip().replace(",", "")
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    decimals = len(b.split(".")[1]) if "." in b else 0
    return abs(x - y) <= 1e-6 * max(1.0, abs(y)) or (decimals > 0 and round(x, decimals) == y)
