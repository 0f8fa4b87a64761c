"""`@tool`: schemas from type hints and docstrings, validation, sync and async, the registry."""

from __future__ import annotations

from enum import Enum
from typing import Literal, Optional

import pytest
from pydantic import BaseModel

from glm_agent.core.contracts import ToolContext
from glm_agent.core.errors import ToolArgumentsError
from glm_agent.core.messages import ToolResult
from glm_agent.tools.function import tool
from glm_agent.tools.registry import ToolRegistry


class Unit(str, Enum):
    c = "c"
    f = "f"


class Point(BaseModel):
    x: float
    y: float


@tool
def get_weather(city: str, unit: Literal["c", "f"] = "c", days: Optional[int] = None) -> str:
    """Current weather for a city.

    Args:
        city: City name, e.g. "Beijing".
        unit: Temperature unit,
            Celsius or Fahrenheit.
        days: Forecast days.
    Returns:
        A sentence.
    """
    return f"{city}: 22{unit}"


def ctx(tmp_path):
    return ToolContext(session_id="t", workspace=tmp_path)


def test_schema_from_hints_and_docstring():
    assert get_weather.name == "get_weather"
    assert get_weather.description == "Current weather for a city."
    props = get_weather.parameters["properties"]
    assert props["city"] == {"type": "string", "description": 'City name, e.g. "Beijing".'}
    assert props["unit"]["enum"] == ["c", "f"] and props["unit"]["default"] == "c"
    assert props["unit"]["description"] == "Temperature unit, Celsius or Fahrenheit."
    assert get_weather.parameters["required"] == ["city"]
    assert get_weather.spec().openai_schema()["function"]["name"] == "get_weather"


def test_sphinx_docstrings_and_nested_models():
    @tool(name="distance", description="Distance between points.")
    def dist(a: Point, b: Point, unit: Unit = Unit.c) -> float:
        """:param a: first point
        :param b: second point"""
        return ((a.x - b.x) ** 2 + (a.y - b.y) ** 2) ** 0.5

    assert dist.name == "distance" and dist.description == "Distance between points."
    assert dist.parameters["properties"]["a"]["description"] == "first point"
    assert "$defs" in dist.parameters  # nested model schema kept for the model to read


async def test_call_validates_and_coerces(tmp_path):
    result = await get_weather.call({"city": "Paris", "unit": "f"}, ctx(tmp_path))
    assert isinstance(result, ToolResult) and result.content == "Paris: 22f"
    with pytest.raises(ToolArgumentsError, match="unit"):
        await get_weather.call({"city": "Paris", "unit": "kelvin"}, ctx(tmp_path))
    with pytest.raises(ToolArgumentsError, match="city: Field required"):
        await get_weather.call({}, ctx(tmp_path))


async def test_async_tools_and_context_injection(tmp_path):
    @tool
    async def write_note(text: str, context: ToolContext) -> dict:
        """Write a note into the workspace."""
        (context.workspace / "note.txt").write_text(text)
        return {"written": len(text)}

    assert "context" not in write_note.parameters["properties"]
    result = await write_note.call({"text": "héllo"}, ctx(tmp_path))
    assert result.content == '{"written": 5}' and (tmp_path / "note.txt").read_text() == "héllo"


async def test_sync_tools_run_off_the_event_loop(tmp_path):
    import threading

    main = threading.get_ident()

    @tool
    def where() -> str:
        """Which thread runs me."""
        return "main" if threading.get_ident() == main else "worker"

    assert (await where.call({}, ctx(tmp_path))).content == "worker"


def test_decorated_function_is_still_callable():
    assert get_weather("Rome") == "Rome: 22c"


def test_registry_lists_builtins_without_importing_them():
    # In a fresh interpreter: other tests in this process may have imported them already.
    import subprocess
    import sys

    code = ("import sys; from glm_agent.tools import registry; "
            "assert {'python', 'shell', 'browser', 'image'} <= set(registry.names()); "
            "heavy = {'playwright', 'jupyter_client', 'diffusers', 'torch'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_registry_errors_name_the_available_tools():
    reg = ToolRegistry()
    reg.register("a", lambda: get_weather)
    with pytest.raises(KeyError, match="available tools: a"):
        reg.create(["b"])
    assert reg.create(["a", ""]) == [get_weather]
