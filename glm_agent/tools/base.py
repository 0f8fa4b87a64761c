"""The tool protocol, the `@tool` decorator and the registry.

A tool is a name, a description, a JSON schema for its arguments and an async `call`
returning a `ToolResult`. `@tool` derives the schema from a function's type hints and
docstring with pydantic, validates arguments, and runs sync functions in a thread.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, get_type_hints

from pydantic import BaseModel, ValidationError, create_model

from glm_agent.agent.messages import ToolResult
from glm_agent.model.base import ToolSpec

__all__ = [
    "Tool",
    "ToolContext",
    "FunctionTool",
    "ToolArgumentsError",
    "tool",
    "ToolRegistry",
    "registry",
]


class ToolArgumentsError(ValueError):
    """Arguments that do not match the tool's schema; the message is written for the model."""


@dataclass
class ToolContext:
    """What a tool may know about the session that called it."""

    session_id: str
    workspace: Path
    # Free-form per-session state a tool may keep (e.g. browser page state).
    state: dict[str, Any] = field(default_factory=dict)


class Tool:
    """Base class for tools. Subclasses set the class attributes and implement `call`.

    `timeout` (seconds) bounds one call; `max_retries` is how many failing calls in a row
    the agent lets the model make before the tool is reported as unavailable.
    """

    name: str = ""
    description: str = ""
    parameters: dict[str, Any] = {"type": "object", "properties": {}}
    raw_arg: str | None = None
    glm_builtin: str | None = None
    timeout: float | None = None
    max_retries: int = 3
    # Sub-commands a model may call as if they were tools of their own (small models call
    # `search(...)` instead of `simple_browser` with action "search"): the agent routes such a
    # call here with `{"action": name, **arguments}`.
    actions: tuple[str, ...] = ()

    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self.parameters,
            raw_arg=self.raw_arg,
            glm_builtin=self.glm_builtin,
        )

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release what the tool holds for its session (kernels, browsers, pipelines)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_PARAM_LINE = re.compile(r"^\s*(?:[:@]param\s+)?(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a docstring into its summary and per-argument descriptions.

    Understands Google style (`Args:` then `name: text` / `name (type): text`, continuation
    lines indented) and Sphinx (`:param name: text`). Other sections (Returns, Raises...)
    are not part of the description the model sees.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section = "summary"
    last: str | None = None
    for line in lines:
        stripped = line.strip()
        lowered = stripped.lower()
        if lowered in ("args:", "arguments:", "parameters:"):
            section, last = "args", None
            continue
        if re.fullmatch(r"[a-z ]+:", lowered):  # Returns:, Raises:, Examples:, Note: ...
            section, last = "other", None
            continue
        if stripped.startswith(":param"):
            section = "sphinx"
        if section in ("args", "sphinx"):
            match = _PARAM_LINE.match(line)
            if match and (section == "sphinx" or not line.startswith((" ", "\t")) or last is None or len(line) - len(line.lstrip()) <= 4):
                last = match.group(1)
                params[last] = match.group(2).strip()
            elif last and stripped:
                params[last] += " " + stripped
        elif section == "summary" and not stripped.startswith(":"):
            summary.append(line)
    return "\n".join(summary).strip(), params


class FunctionTool(Tool):
    """A tool made from a plain (sync or async) Python function by `@tool`."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_retries: int = 3,
    ):
        self.func = func
        self.name = name or func.__name__
        summary, arg_docs = _parse_docstring(func.__doc__ or "")
        self.description = description or summary or self.name
        self.timeout = timeout
        self.max_retries = max_retries
        self._is_async = inspect.iscoroutinefunction(func)
        self._wants_ctx = False
        self.model = self._build_model(func, arg_docs)
        schema = self.model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.parameters = schema
        self.__doc__ = func.__doc__

    def _build_model(self, func: Callable[..., Any], arg_docs: dict[str, str]) -> type[BaseModel]:
        from pydantic import Field

        hints = get_type_hints(func, include_extras=True)
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(func).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"@tool {func.__name__}: *args/**kwargs are not supported")
            annotation = hints.get(pname, Any)
            if annotation is ToolContext:
                self._wants_ctx = True
                self._ctx_name = pname
                continue
            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, Field(default, description=arg_docs.get(pname)))
        return create_model(f"{func.__name__}_args", **fields)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        try:
            parsed = self.model.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ToolArgumentsError(f"invalid arguments for `{self.name}`: {problems}") from None
        return {name: getattr(parsed, name) for name in type(parsed).model_fields}

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        kwargs = self.validate(arguments)
        if self._wants_ctx:
            kwargs[self._ctx_name] = ctx
        if self._is_async:
            value = await self.func(**kwargs)
        else:
            value = await asyncio.to_thread(self.func, **kwargs)
        return _to_result(value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling the decorated function directly still runs the original function."""
        return self.func(*args, **kwargs)


def _to_result(value: Any) -> ToolResult:
    if isinstance(value, ToolResult):
        return value
    if isinstance(value, str):
        return ToolResult(content=value)
    if value is None:
        return ToolResult(content="(no output)")
    if isinstance(value, BaseModel):
        return ToolResult(content=value.model_dump_json())
    try:
        import json

        return ToolResult(content=json.dumps(value, ensure_ascii=False, default=str))
    except (TypeError, ValueError):
        return ToolResult(content=repr(value))


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_retries: int = 3,
) -> Any:
    """Turn a function into a `Tool`.

    ```python
    @tool
    def get_weather(city: str, unit: Literal["c", "f"] = "c") -> str:
        '''Current weather for a city.

        Args:
            city: City name, e.g. "Beijing".
            unit: Temperature unit.
        '''
    ```
    """

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, timeout=timeout, max_retries=max_retries)

    return wrap(func) if func is not None else wrap


class ToolRegistry:
    """Named tool factories shared by the agent and the CLI (`--tools python,browser`).

    Factories, not instances, because tools such as `python` hold per-session state: every
    agent gets fresh instances.
    """

    def __init__(self) -> None:
        self._factories: dict[str, Callable[[], Tool]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, factory: Callable[[], Tool], help: str = "") -> None:
        self._factories[name] = factory
        self._help[name] = help

    def names(self) -> list[str]:
        return sorted(self._factories)

    def describe(self) -> dict[str, str]:
        return {n: self._help[n] for n in self.names()}

    def create_with(self, name: str, **options: Any) -> Tool:
        """One fresh instance of tool `name`, with constructor options."""
        if name not in self._factories:
            known = ", ".join(self.names()) or "none"
            raise KeyError(f"unknown tool {name!r}; available tools: {known}")
        factory = self._factories[name]
        return factory(**options) if options else factory()

    def create(self, names: Iterable[str]) -> list[Tool]:
        tools = []
        for name in names:
            name = name.strip()
            if not name:
                continue
            if name not in self._factories:
                known = ", ".join(self.names()) or "none"
                raise KeyError(f"unknown tool {name!r}; available tools: {known}")
            tools.append(self._factories[name]())
        return tools


registry = ToolRegistry()
