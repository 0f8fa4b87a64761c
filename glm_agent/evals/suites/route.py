"""`route`: which tool does the agent reach for first?

Each prompt is labelled with the tool a good agent calls on its first step: `python`
(calculations, dates, data, plots), the `browser` (current facts, web pages), `image`
generation, one of a few plain user tools (`get_weather`, `send_email`, `lookup_order`,
`create_calendar_event`), or none at all (chit-chat, thanks, questions the model can answer
itself). Every sample offers all of them at once, the built-ins exactly as the runtime presents
them (name, description and parameters of the real tool classes), so a change in how tools are
described shows up here. The run stops after the model's first step and nothing is executed:
the judge checks that every call of that step names the labelled tool, or that there is no call
when the label is none (a call cut off by the token cap counts by the name it opened with). Per-category accuracy comes with Wilson intervals.

Data lines (`data/route.jsonl`): `{"id", "category", "tool", "prompt"}` where `tool` is
`python`, `browser`, `image`, a user tool's name, or null for no tool.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, read_jsonl

__all__ = [
    "RouteSuite",
    "OfferedTool",
    "USER_TOOLS",
    "BUILTIN_ROLES",
    "CATEGORIES",
    "builtin_tools",
    "load_route",
    "check_route",
]

CATEGORIES = ("python", "browser", "image", "user", "none")
BUILTIN_ROLES = ("python", "browser", "image")

# Plain user tools, as someone would declare them with @tool: offered alongside the built-ins.
USER_TOOLS: tuple[dict[str, Any], ...] = (
    {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit."},
            },
            "required": ["city"],
        },
    },
    {
        "name": "send_email",
        "description": "Send an email on the user's behalf.",
        "parameters": {
            "type": "object",
            "properties": {
                "to": {"type": "string", "description": "Recipient address."},
                "subject": {"type": "string", "description": "Subject line."},
                "body": {"type": "string", "description": "Message text."},
            },
            "required": ["to", "subject", "body"],
        },
    },
    {
        "name": "lookup_order",
        "description": "Look up one of the user's orders in the shop: status, items, delivery date.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string", "description": "The order number."}},
            "required": ["order_id"],
        },
    },
    {
        "name": "create_calendar_event",
        "description": "Add an event to the user's calendar.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string", "description": "What the event is."},
                "date": {"type": "string", "description": "YYYY-MM-DD."},
                "time": {"type": "string", "description": "HH:MM, 24-hour clock."},
            },
            "required": ["title", "date"],
        },
    },
)


class OfferedTool(Tool):
    """A tool the model is offered but that never runs: calls are recorded for the judge."""

    def __init__(self, name: str, description: str, parameters: dict[str, Any]):
        self.name = name
        self.description = description
        self.parameters = parameters
        self.calls: list[dict[str, Any]] = []

    @classmethod
    def like(cls, tool: Tool) -> "OfferedTool":
        return cls(tool.name, tool.description, tool.parameters)

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.calls.append(arguments)
        return ToolResult(content="(call recorded; the evaluation ends after this step)")


def builtin_tools() -> dict[str, Tool]:
    """The built-ins as a chat session presents them, by role: python, browser, image.

    The python tool's text depends on its sandbox settings, so it is built with the defaults
    (no kernel starts). The image tool is taken as described when its backend works: whether an
    image model is installed on this machine must not change the score.
    """
    from glm_agent.tools.browser.tool import BrowserTool
    from glm_agent.tools.image.tool import ImageTool
    from glm_agent.tools.python import PythonTool

    return {
        "python": OfferedTool.like(PythonTool()),
        "browser": OfferedTool(BrowserTool.name, BrowserTool.description, BrowserTool.parameters),
        "image": OfferedTool(ImageTool.name, ImageTool.description, ImageTool.parameters),
    }


def load_route(path: str | Path, user_tools: tuple[str, ...] | None = None) -> list[Sample]:
    path = Path(path)
    known = set(BUILTIN_ROLES) | set(user_tools if user_tools is not None else (t["name"] for t in USER_TOOLS))
    samples = []
    for lineno, obj in read_jsonl(path):
        for key in ("id", "category", "prompt"):
            if key not in obj:
                raise TaskFileError(path, lineno, f"missing field {key!r}")
        if "tool" not in obj:
            raise TaskFileError(path, lineno, "missing field 'tool' (a tool name, or null for no tool)")
        category, tool = str(obj["category"]), obj["tool"]
        if category not in CATEGORIES:
            raise TaskFileError(path, lineno, f"unknown category {category!r} (expected one of {CATEGORIES})")
        if tool is not None and tool not in known:
            raise TaskFileError(path, lineno, f"unknown tool {tool!r} (expected one of {sorted(known)} or null)")
        if (category == "none") != (tool is None):
            raise TaskFileError(path, lineno, "category 'none' goes with tool null, and only it")
        if category in BUILTIN_ROLES and tool != category:
            raise TaskFileError(path, lineno, f"category {category!r} expects tool {category!r}, got {tool!r}")
        if category == "user" and tool in BUILTIN_ROLES:
            raise TaskFileError(path, lineno, f"category 'user' expects a user tool, got built-in {tool!r}")
        if not str(obj["prompt"]).strip():
            raise TaskFileError(path, lineno, "empty prompt")
        samples.append(
            Sample(
                id=str(obj["id"]),
                prompt=str(obj["prompt"]),
                category=category,
                gold={"tool": tool},
                source=f"{path}:{lineno}",
            )
        )
    return samples


def check_route(calls: list[ToolCall], expected: str | None) -> tuple[bool, str]:
    """Right when every first-step call names `expected` (a tool name), or none is made when it is None."""
    names = [c.name for c in calls]
    if expected is None:
        return (not names, "no tool called" if not names else f"called {names}, expected no tool")
    if not names:
        return False, f"no tool called, expected {expected!r}"
    wrong = [n for n in names if n != expected]
    if wrong:
        return False, f"called {names}, expected {expected!r}"
    return True, f"called {expected!r}"


class RouteSuite(Suite):
    name = "route"
    category_order = CATEGORIES
    description = "first-step tool choice: python, browser, image, a user tool or no tool"
    max_steps = 1
    sample_timeout = 180.0

    def load(self) -> list[Sample]:
        if self.data is not None:
            return load_route(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "route.jsonl") as path:
            return load_route(path)

    def _names(self) -> dict[str, str]:
        """Label -> the tool name the model sees (built-in roles map to the real names)."""
        names = {role: tool.name for role, tool in builtin_tools().items()}
        names.update({t["name"]: t["name"] for t in USER_TOOLS})
        return names

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        tools: list[Tool] = list(builtin_tools().values())
        tools += [_user_tool(t) for t in USER_TOOLS]
        # No system prompt of the suite's own: what is measured is the runtime's default presentation.
        return SampleEnv(tools=tools, system=None, prompt=sample.prompt, max_steps=1, stop_after_tools=True)

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        calls = _first_step_calls(result.messages)
        label = sample.gold["tool"]
        expected = None if label is None else self._names()[label]
        ok, reason = check_route(calls, expected)
        info = {"expected": expected, "calls": [c.name for c in calls]}
        bad = [c.name for c in calls if c.arguments_error]
        if bad:
            info["unparsed_arguments"] = bad
        return Judgement(float(ok), detail=reason, info=info)

    def oracle(self, sample: Sample) -> list[Any]:
        label = sample.gold["tool"]
        if label is None:
            return ["Happy to help; no tool is needed for that."]
        name = self._names()[label]
        tool = next(t for t in (*builtin_tools().values(), *map(_user_tool, USER_TOOLS)) if t.name == name)
        return [ToolCall(name=name, arguments=_sample_arguments(tool.parameters, sample.prompt))]

def _user_tool(spec: dict[str, Any]) -> OfferedTool:
    return OfferedTool(spec["name"], spec["description"], spec["parameters"])


def _sample_arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    """Arguments that satisfy the required part of `schema` (the oracle's calls must be valid)."""
    args: dict[str, Any] = {}
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        prop = props.get(key) or {}
        if prop.get("enum"):
            args[key] = prop["enum"][0]
        elif prop.get("type") in ("integer", "number"):
            args[key] = 1
        elif prop.get("type") == "array":
            args[key] = []
        else:
            args[key] = text
    return args


# A call the token cap cut off, left as text: `<tool_call>` / a ```json fence / a bare object
# opening with its name. Only the name matters here, and runs may cap tokens to stay cheap.
_OPENED_CALL = re.compile(r'^\s*(?:<tool_call>\s*|```(?:json)?\s*)?\{\s*"name"\s*:\s*"([^"]+)"')


def _first_step_calls(messages: list[Any]) -> list[ToolCall]:
    """The tool calls of the first assistant message (the suite stops after it anyway)."""
    for m in messages:
        if getattr(m, "role", "") == "assistant":
            if m.tool_calls:
                return list(m.tool_calls)
            opened = _OPENED_CALL.match(m.content or "")
            if opened:
                return [ToolCall(name=opened.group(1), arguments={}, arguments_error="cut off before the end")]
            return []
    return []
