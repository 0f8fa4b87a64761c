"""How the db suite's `sql` tool shows a statement's result to the agent (both backends)."""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["MAX_ROWS_SHOWN", "MAX_CHARS", "format_rows", "strip_fence", "plain"]

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
