"""Answer parsing and the checkers of AgentBench's OS-interaction tasks (our code, their semantics)."""

from __future__ import annotations

import re

__all__ = [
    "JUDGE_MODES",
    "LENIENT_MATCHERS",
    "MATCHERS",
    "match_answer",
    "matchers",
    "containing_match",
    "in_match",
    "integer_match",
    "parse_answer",
    "size_match",
    "string_match",
]


# AgentBench's checkers (their `check/*.py` files, our code): argv[1] is the agent's answer,
# argv[2] the example's stdout; a checker that raises (int("five")) fails the task.
def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def integer_match(answer: str, expected: str) -> bool:
    """`int(answer) == int(expected)`: Python's int(), so surrounding blanks are fine, words are not."""
    try:
        return int(answer) == int(expected)
    except ValueError:
        return False


def string_match(answer: str, expected: str) -> bool:
    return _norm(answer) == _norm(expected)


# Checked in this order, as AgentBench does: "5KB" is read as "5K" + "B" and fails int().
_AB_UNITS = {"B": 1, "Byte": 1, "K": 1024, "KB": 1024, "M": 1024**2, "MB": 1024**2, "G": 1024**3,
             "GB": 1024**3, "T": 1024**4, "TB": 1024**4, "P": 1024**5, "PB": 1024**5}


def _ab_size(text: str) -> int:
    text = text.strip()
    for unit, factor in _AB_UNITS.items():
        if text.endswith(unit):
            return int(text[: -len(unit)]) * factor
    return int(text)


def _exact_size(text: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(B|Byte|KB|K|MB|M|GB|G|TB|T|PB|P)?", text.strip())
    return float(m.group(1)) * _AB_UNITS.get(m.group(2) or "B", 1) if m else None


def size_match(answer: str, expected: str) -> bool:
    """Equal sizes in bytes: `8K` == `8192`; whole numbers, as upstream (`8.0K` fails int()).

    One difference: where upstream's checker cannot read the expected value itself (`du -h`
    prints `6.1G` for sizes under 10 units), it fails every answer; we then compare the sizes
    exactly with their decimals instead (`6.1G` == `6.1G`, not `6.2G`)."""
    try:
        expected_bytes = _ab_size(expected)
    except ValueError:
        a, b = _exact_size(answer), _exact_size(expected)
        return a is not None and a == b
    try:
        return _ab_size(answer) == expected_bytes
    except ValueError:
        return False


def containing_match(answer: str, expected: str) -> bool:
    return _norm(expected) in _norm(answer)


def in_match(answer: str, expected: str) -> bool:
    return _norm(answer) in _norm(expected)


# -- lenient checkers: a deliberate difference, chosen with `--judge lenient` -----------------
def _first_int(text: str) -> int | None:
    m = re.search(r"-?\d+", text.replace(",", ""))
    return int(m.group(0)) if m else None


def lenient_integer_match(answer: str, expected: str) -> bool:
    """The first integer anywhere in each ("There are 5 files." == "5")."""
    a, b = _first_int(answer), _first_int(expected)
    return a is not None and a == b


_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _lenient_size(text: str) -> float | None:
    m = re.search(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\b", text.strip(), re.I)
    if not m:
        return None
    return float(m.group(1)) * _UNITS[m.group(2).upper()]


def lenient_size_match(answer: str, expected: str) -> bool:
    """Human-readable sizes with decimals (`8.0K` == `8192`) and 5% slack for du's rounding."""
    a, b = _lenient_size(answer), _lenient_size(expected)
    if a is None or b is None:
        return False
    return abs(a - b) <= 0.05 * max(a, b, 1)


MATCHERS = {
    "integer-match": integer_match,
    "string-match": string_match,
    "size-match": size_match,
    "containing": containing_match,
    "in": in_match,
}
LENIENT_MATCHERS = {**MATCHERS, "integer-match": lenient_integer_match, "size-match": lenient_size_match}
JUDGE_MODES = ("agentbench", "lenient")


def matchers(mode: str = "agentbench") -> dict:
    """The checkers of a judge mode: `agentbench` (theirs, exactly) or `lenient`."""
    if mode not in JUDGE_MODES:
        raise ValueError(f"unknown judge {mode!r}: use one of {', '.join(JUDGE_MODES)}")
    return MATCHERS if mode == "agentbench" else LENIENT_MATCHERS


def match_answer(answer: str, match: dict, mode: str = "agentbench") -> bool:
    """A `match` task: the answer (stripped when `strip`) equals `answer` or contains `regex`.
    AgentBench compares with the expected string as written; `lenient` strips it too."""
    got = answer.strip() if match.get("strip", True) else answer
    if "regex" in match:
        return re.search(match["regex"], got) is not None
    expected = str(match["answer"])
    return got == (expected.strip() if mode == "lenient" else expected)


def parse_answer(text: str) -> str:
    """The agent's answer: `answer(...)`; else everything after the last `Answer:` (answers may
    span lines, like AgentBench's `answer_action` argument); else the last non-empty line."""
    text = (text or "").strip()
    calls = re.findall(r"answer\((.*?)\)\s*$", text, re.I | re.M | re.S)
    if calls:
        return calls[-1].strip().strip("\"'")
    marks = list(re.finditer(r"^[ \t]*(?:final[ \t]+)?answer[ \t]*[:：][ \t]*", text, re.I | re.M))
    if marks:
        return text[marks[-1].end():].strip().strip("`").strip()
    rest = [line for line in text.splitlines() if line.strip()]
    return rest[-1].strip().strip("`") if rest else ""
