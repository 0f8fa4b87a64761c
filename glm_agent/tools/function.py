"""`@tool`: a plain Python function becomes a `Tool`.

The JSON schema comes from the function's type hints and docstring (pydantic); arguments are
validated before the call; sync functions run in a worker thread.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any, Callable, get_type_hints

from pydantic import BaseModel, ValidationError, create_model

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.errors import ToolArgumentsError
from glm_agent.core.messages import ToolResult

__all__ = ["FunctionTool", "tool"]


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
