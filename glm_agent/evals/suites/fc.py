"""`fc`: function calling in the BFCL format, judged by our own AST checker.

A sample offers some functions (schema only: they are never executed) and a request; the run
stops after the model's first turn and the tool calls it made are checked against the possible
answers: function names, required arguments, no unexpected arguments, argument types, and values
within each parameter's acceptable list (strings compared loosely, `""` meaning "may be
omitted"). `parallel*` categories match calls in any order; `irrelevance` passes when the model
calls nothing.

Data: our own `data/fc.jsonl` (BFCL question lines with the answer inline as `ground_truth`), or
a BFCL data folder (`BFCL_v3_*.json` / `BFCL_v4_*.json` question files plus
`possible_answer/<same name>`), or `data="bfcl"` for the files inside an installed `bfcl-eval`.
"""

from __future__ import annotations

import importlib.util
import re
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, read_jsonl, tool_calls_of

__all__ = [
    "FCSuite",
    "SchemaTool",
    "load_bfcl_file",
    "load_bfcl_dir",
    "bfcl_package_dir",
    "bfcl_to_json_schema",
    "check_calls",
    "oracle_calls",
    "CATEGORIES",
]

CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
# BFCL file categories we read, mapped onto ours (v4 renamed simple -> simple_python).
_FILE_CATEGORIES = {
    "simple": "simple",
    "simple_python": "simple",
    "multiple": "multiple",
    "parallel": "parallel",
    "parallel_multiple": "parallel_multiple",
    "irrelevance": "irrelevance",
}

SYSTEM = (
    "You can call the functions provided. Decide whether the user's request can be done with "
    "them. If it can, call the function(s) with exactly the arguments needed; when several calls "
    "are needed, make all of them in this one turn. If none of the functions fits the request, "
    "do not call any function: say so in text."
)

_TYPE_MAP = {
    "dict": "object",
    "object": "object",
    "integer": "integer",
    "int": "integer",
    "float": "number",
    "number": "number",
    "string": "string",
    "str": "string",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
}


def bfcl_to_json_schema(schema: Any) -> Any:
    """BFCL's Python-flavoured schema (`dict`, `float`, `tuple`, `any`) as JSON Schema."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type":
            if value == "any":
                continue
            out["type"] = _TYPE_MAP.get(str(value), str(value))
        elif key == "properties" and isinstance(value, dict):
            out["properties"] = {k: bfcl_to_json_schema(v) for k, v in value.items()}
        elif key == "items":
            out["items"] = bfcl_to_json_schema(value)
        elif key == "optional":
            continue
        else:
            out[key] = value
    return out


def tool_name(name: str) -> str:
    """OpenAI-compatible tool names allow only [A-Za-z0-9_-]: `math.factorial` -> `math_factorial`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", name)


class SchemaTool(Tool):
    """A function offered to the model but never executed: calls are recorded for the checker."""

    def __init__(self, function: dict[str, Any]):
        self.function = function
        self.name = tool_name(function["name"])
        self.description = function.get("description", "")
        params = bfcl_to_json_schema(function.get("parameters") or {"type": "dict", "properties": {}})
        params.setdefault("type", "object")
        self.parameters = params
        self.calls: list[dict[str, Any]] = []

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(arguments)
        return ToolResult(content="(call recorded; the evaluation ends after this turn)")


# -- loading -----------------------------------------------------------------------------------
def _category_of(sample_id: str, fallback: str = "") -> str:
    base = re.sub(r"_\d+(-\d+)*$", "", sample_id)
    return _FILE_CATEGORIES.get(base, fallback or base)


def _sample_from(obj: dict[str, Any], path: Path, lineno: int, category: str, answers: list | None) -> Sample:
    for key in ("id", "question", "function"):
        if key not in obj:
            raise TaskFileError(path, lineno, f"missing field {key!r}")
    question = obj["question"]
    turns = question[0] if question and isinstance(question[0], list) else question
    if not isinstance(turns, list) or not all(isinstance(m, dict) and "content" in m for m in turns):
        raise TaskFileError(path, lineno, "field 'question' must be [[{role, content}, ...]]")
    functions = obj["function"]
    if isinstance(functions, dict):
        functions = [functions]
    if not isinstance(functions, list) or not all(isinstance(f, dict) and "name" in f for f in functions):
        raise TaskFileError(path, lineno, "field 'function' must be a list of {name, description, parameters}")
    system = "\n".join(m["content"] for m in turns if m.get("role") == "system")
    prompt = "\n".join(m["content"] for m in turns if m.get("role") != "system")
    if category != "irrelevance" and not answers:
        raise TaskFileError(path, lineno, f"sample {obj['id']!r} has no ground truth")
    return Sample(
        id=str(obj["id"]),
        prompt=prompt,
        category=category,
        gold={"functions": functions, "ground_truth": answers or [], "system": system},
        source=f"{path}:{lineno}",
    )


def load_bfcl_file(path: str | Path) -> list[Sample]:
    """Our own format: BFCL question lines with `ground_truth` inline."""
    path = Path(path)
    samples = []
    for lineno, obj in read_jsonl(path):
        category = obj.get("category") or _category_of(str(obj.get("id", "")))
        if category not in CATEGORIES:
            raise TaskFileError(path, lineno, f"unknown category {category!r} (expected one of {CATEGORIES})")
        samples.append(_sample_from(obj, path, lineno, category, obj.get("ground_truth")))
    return samples


def load_bfcl_dir(folder: str | Path, categories: tuple[str, ...] | None = None) -> list[Sample]:
    """A BFCL data folder: `BFCL_v*_<category>.json` + `possible_answer/BFCL_v*_<category>.json`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskFileError(folder, None, "not a folder of BFCL data files")
    samples: list[Sample] = []
    found = False
    for file in sorted(folder.glob("BFCL_v*_*.json")):
        m = re.match(r"BFCL_v\d+_(.+)\.json$", file.name)
        if not m or m.group(1) not in _FILE_CATEGORIES:
            continue
        category = _FILE_CATEGORIES[m.group(1)]
        if categories and category not in categories:
            continue
        found = True
        answers: dict[str, list] = {}
        answer_file = folder / "possible_answer" / file.name
        if category != "irrelevance":
            if not answer_file.exists():
                raise TaskFileError(answer_file, None, f"missing possible-answer file for {file.name}")
            for lineno, obj in read_jsonl(answer_file):
                if "id" not in obj or "ground_truth" not in obj:
                    raise TaskFileError(answer_file, lineno, "expected {id, ground_truth}")
                answers[str(obj["id"])] = obj["ground_truth"]
        for lineno, obj in read_jsonl(file):
            samples.append(_sample_from(obj, file, lineno, category, answers.get(str(obj.get("id")))))
    if not found:
        raise TaskFileError(folder, None, "no BFCL_v*_{simple,multiple,parallel,parallel_multiple,irrelevance}.json files")
    return samples


def bfcl_package_dir() -> Path:
    """The data folder of an installed `bfcl-eval` (found without importing its heavy checker)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise TaskFileError("bfcl", None, "the `bfcl-eval` package is not installed: pip install --no-deps bfcl-eval")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


# -- the AST checker ---------------------------------------------------------------------------
def _standardize(text: str) -> str:
    return re.sub(r"[ ,./\-_*^]", "", text).lower().replace("'", '"')


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    kind = str(schema.get("type", "any"))
    if kind in ("integer", "int"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "number"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind in ("string", "str"):
        return isinstance(value, str)
    if kind in ("boolean", "bool"):
        return isinstance(value, bool)
    if kind in ("array", "list", "tuple"):
        if not isinstance(value, list):
            return False
        items = schema.get("items")
        return not isinstance(items, dict) or all(_type_ok(v, items) for v in value)
    if kind in ("dict", "object"):
        return isinstance(value, dict)
    return True


def _value_ok(value: Any, acceptable: Any) -> bool:
    if isinstance(acceptable, str):
        return isinstance(value, str) and _standardize(value) == _standardize(acceptable)
    if isinstance(acceptable, bool) or isinstance(value, bool):
        return value is acceptable
    if isinstance(acceptable, (int, float)):
        return isinstance(value, (int, float)) and abs(float(value) - float(acceptable)) < 1e-9
    if isinstance(acceptable, list):
        return (
            isinstance(value, list)
            and len(value) == len(acceptable)
            and all(_value_ok(v, a) for v, a in zip(value, acceptable))
        )
    if isinstance(acceptable, dict):
        # BFCL: a dict answer maps each key to its own list of acceptable values.
        if not isinstance(value, dict):
            return False
        for key, v in value.items():
            options = acceptable.get(key)
            if options is None:
                return False
            options = options if isinstance(options, list) else [options]
            if not any(_value_ok(v, o) for o in options if o != ""):
                return False
        return all(
            key in value or (isinstance(opts, list) and "" in opts) for key, opts in acceptable.items()
        )
    return value == acceptable


def check_one(call: ToolCall, expected: dict[str, Any], functions: dict[str, dict]) -> str | None:
    """None when `call` matches one ground-truth entry `{name: {param: [acceptable...]}}`."""
    (gold_name, gold_params), = expected.items()
    if tool_name(call.name) != tool_name(gold_name):
        return f"called {call.name!r}, expected {gold_name!r}"
    if call.arguments_error:
        return f"{call.name}: arguments could not be parsed ({call.arguments_error})"
    function = functions.get(tool_name(gold_name), {})
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    args = call.arguments
    for name in params.get("required") or []:
        if name not in args:
            return f"{call.name}: missing required argument {name!r}"
    for name, value in args.items():
        if name not in props or name not in gold_params:
            return f"{call.name}: unexpected argument {name!r}"
        if not _type_ok(value, props[name]):
            return f"{call.name}: argument {name!r}={value!r} has the wrong type (expected {props[name].get('type')})"
        options = gold_params[name]
        options = options if isinstance(options, list) else [options]
        if not any(_value_ok(value, o) for o in options if o != ""):
            shown = [o for o in options if o != ""]
            return f"{call.name}: argument {name!r}={value!r} is not one of {shown!r}"
    for name, options in gold_params.items():
        if name not in args and not (isinstance(options, list) and "" in options):
            return f"{call.name}: missing argument {name!r}"
    return None


def check_calls(
    calls: list[ToolCall], functions: list[dict[str, Any]], ground_truth: list[dict[str, Any]], category: str
) -> tuple[bool, str]:
    """The BFCL AST rules over the tool calls a model made; (passed, reason)."""
    if category == "irrelevance":
        if calls:
            return False, f"called {[c.name for c in calls]} although no function fits"
        return True, "no function called"
    by_name = {tool_name(f["name"]): f for f in functions}
    if not calls:
        return False, "no function was called"
    if len(calls) != len(ground_truth):
        return False, f"made {len(calls)} call(s), expected {len(ground_truth)}"
    if not category.startswith("parallel"):
        problem = check_one(calls[0], ground_truth[0], by_name)
        return (problem is None, problem or "call matches")

    # Order-free: find an assignment of calls to expected entries (backtracking; n is small).
    reasons: list[str] = []

    def assign(i: int, used: set[int]) -> bool:
        if i == len(ground_truth):
            return True
        for j, call in enumerate(calls):
            if j in used:
                continue
            problem = check_one(call, ground_truth[i], by_name)
            if problem is None:
                if assign(i + 1, used | {j}):
                    return True
            else:
                reasons.append(problem)
        return False

    if assign(0, set()):
        return True, "all calls match"
    return False, reasons[-1] if reasons else "calls do not match"


def _first_value(options: Any) -> tuple[bool, Any]:
    """The first acceptable value of a ground-truth list; (False, None) when it may be omitted only."""
    options = options if isinstance(options, list) else [options]
    for option in options:
        if option == "":
            continue
        if isinstance(option, dict):
            value = {}
            for key, sub in option.items():
                present, v = _first_value(sub)
                if present:
                    value[key] = v
            return True, value
        return True, option
    return False, None


def oracle_calls(ground_truth: list[dict[str, Any]]) -> list[ToolCall]:
    calls = []
    for entry in ground_truth:
        (name, params), = entry.items()
        args = {}
        for key, options in params.items():
            present, value = _first_value(options)
            if present:
                args[key] = value
        calls.append(ToolCall(name=tool_name(name), arguments=args))
    return calls


class FCSuite(Suite):
    name = "fc"
    description = "BFCL-style function calling (simple, multiple, parallel, parallel_multiple, irrelevance)"
    max_steps = 1
    sample_timeout = 180.0

    def load(self) -> list[Sample]:
        if self.data is not None:
            if str(self.data) == "bfcl":
                return load_bfcl_dir(bfcl_package_dir())
            if self.data.is_dir():
                return load_bfcl_dir(self.data)
            return load_bfcl_file(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "fc.jsonl") as path:
            return load_bfcl_file(path)

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        tools = [SchemaTool(f) for f in sample.gold["functions"]]
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"two functions map to the same tool name: {names}")
        system = SYSTEM + ("\n\n" + sample.gold["system"] if sample.gold.get("system") else "")
        return SampleEnv(tools=tools, system=system, prompt=sample.prompt, max_steps=1, stop_after_tools=True)

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        calls = tool_calls_of(result.messages)
        ok, reason = check_calls(calls, sample.gold["functions"], sample.gold["ground_truth"], sample.category)
        return Judgement(float(ok), detail=reason,
                         info={"calls": [{"name": c.name, "arguments": c.arguments} for c in calls]})

    def oracle(self, sample: Sample) -> list[Any]:
        if sample.category == "irrelevance":
            return ["None of the available functions can do that, so I will not call any."]
        return [oracle_calls(sample.gold["ground_truth"])]
