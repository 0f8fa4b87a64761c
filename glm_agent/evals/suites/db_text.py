"""The db suite's `sql` tool as the agent sees it, for both backends: its declaration, and how
a statement's result is shown."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolResult

__all__ = ["MAX_ROWS_SHOWN", "MAX_CHARS", "SQLStatementTool", "format_rows", "strip_fence", "plain"]

MAX_ROWS_SHOWN = 50
MAX_CHARS = 4000


def plain(value: Any) -> Any:
    """A JSON-friendly value: bytes as text, Decimal/datetime as their string."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def format_rows(columns: list[str], rows: list[tuple]) -> str:
    """`columns: [...]`, then one JSON list per row (at most MAX_ROWS_SHOWN, MAX_CHARS)."""
    more = len(rows) > MAX_ROWS_SHOWN
    rows = rows[:MAX_ROWS_SHOWN]
    lines = ["columns: " + json.dumps(columns, ensure_ascii=False)]
    lines += [json.dumps([plain(v) for v in r], ensure_ascii=False, default=str) for r in rows]
    if not rows:
        lines.append("(no rows)")
    if more:
        lines.append(f"(only the first {MAX_ROWS_SHOWN} rows are shown)")
    text = "\n".join(lines)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "\n(output truncated)"
    return text


def strip_fence(query: str) -> str:
    """The statement inside a ```sql fence, which small models often add."""
    m = re.match(r"^```(?:sql|sqlite|mysql)?\s*\n?(.*?)\n?```$", query, re.S | re.I)
    return m.group(1).strip() if m else query


class SQLStatementTool(Tool):
    """The `sql` tool: one statement in `query`, run by the backend's `_run` in a thread."""

    name = "sql"
    dialect = "SQL"  # the subclass's: "SQLite", "MySQL"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.description = (f"Execute one {cls.dialect} statement on the task's database and return the result rows "
                           "(or the number of changed rows, or the error message).")
        cls.parameters = {
            "type": "object",
            "properties": {"query": {"type": "string", "description": f"One {cls.dialect} statement."}},
            "required": ["query"],
        }

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        query = strip_fence(str(arguments.get("query") or arguments.get("sql") or "").strip())
        if not query:
            return ToolResult(content=f"Error: empty query. Pass one {self.dialect} statement as `query`.",
                              is_error=True)
        return await asyncio.to_thread(self._run, query)

    def _run(self, query: str) -> ToolResult:
        raise NotImplementedError
