"""Parse browser actions: GLM-4 action lines (`search("q", recency_days=7)`) or JSON arguments.

Action text is parsed with `ast` and `ast.literal_eval` only: a call of a known name with
literal arguments. Nothing the model writes is ever evaluated.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

from glm_agent.core.errors import GlmAgentError

__all__ = ["Action", "ActionError", "ACTIONS", "parse_action_text", "parse_arguments", "USAGE"]

# name -> positional parameter names
ACTIONS: dict[str, tuple[str, ...]] = {
    "search": ("query", "recency_days"),
    "mclick": ("ids",),
    "open_url": ("url",),
    "scroll": ("page",),
    "find": ("pattern",),
}
_ALIASES = {"click": "mclick", "open": "open_url", "goto": "open_url", "visit": "open_url", "quote": "mclick"}
USAGE = (
    'search("query", recency_days=7) | mclick([0, 3, 5]) | open_url("https://...") or open_url(3) | '
    "scroll() for the next page or scroll(2) for page 2 | find(\"text\")"
)
_MAX_ACTIONS = 5


class ActionError(GlmAgentError, ValueError):
    """Malformed action; the message tells the model how to write it."""


@dataclass
class Action:
    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.args.items() if v is not None)
        return f"{self.name}({inner})"


def _clean_text(text: str) -> str:
    text = text.strip()
    for token in ("<|observation|>", "<|assistant|>", "<|user|>", "<|endoftext|>"):
        text = text.replace(token, "")
    fence = re.match(r"^```[\w-]*\n(.*?)\n?```\s*$", text, re.S)
    if fence:
        text = fence.group(1)
    # Typographic quotes some models produce.
    return text.translate({0x201C: '"', 0x201D: '"', 0x2018: "'", 0x2019: "'", 0xFF08: "(", 0xFF09: ")", 0xFF0C: ", "}).strip()


def _literal(node: ast.AST, line: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, SyntaxError, TypeError):
        snippet = ast.get_source_segment(line, node) or ast.dump(node)
        raise ActionError(f"argument `{snippet}` in `{line.strip()}` is not a literal value (quote strings).") from None


def _from_call(call: ast.Call, source: str) -> Action:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    name = _ALIASES.get(name, name)
    if name not in ACTIONS:
        raise ActionError(f"unknown browser function `{name or ast.dump(func)}`; use one of: {USAGE}")
    positional = [_literal(a, source) for a in call.args]
    kwargs = {kw.arg: _literal(kw.value, source) for kw in call.keywords if kw.arg}
    params = ACTIONS[name]
    if name == "mclick" and len(positional) > 1:  # mclick(0, 3, 5)
        positional = [positional]
    if len(positional) > len(params):
        raise ActionError(f"`{name}` takes at most {len(params)} positional argument(s); use: {USAGE}")
    args = dict(zip(params, positional))
    args.update(kwargs)
    return normalize(Action(name, args))


def parse_action_text(text: str) -> list[Action]:
    """Actions from GLM-4 action text: one call per line (a call may span lines)."""
    text = _clean_text(text)
    if not text:
        raise ActionError(f"empty browser action; use one of: {USAGE}")
    try:
        tree = ast.parse(text, mode="exec")
        statements = tree.body
    except SyntaxError:
        statements = None
    actions: list[Action] = []
    if statements is not None:
        for stmt in statements:
            if not (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)):
                segment = ast.get_source_segment(text, stmt) or text
                raise ActionError(f"`{segment.strip()}` is not a browser function call; use one of: {USAGE}")
            actions.append(_from_call(stmt.value, text))
    else:
        for line in (ln for ln in text.splitlines() if ln.strip()):
            try:
                node = ast.parse(line.strip(), mode="eval").body
            except SyntaxError as exc:
                raise ActionError(f"could not parse browser action `{line.strip()}` ({exc.msg}); use one of: {USAGE}") from None
            if not isinstance(node, ast.Call):
                raise ActionError(f"`{line.strip()}` is not a browser function call; use one of: {USAGE}")
            actions.append(_from_call(node, line.strip()))
    if len(actions) > _MAX_ACTIONS:
        raise ActionError(f"too many browser actions in one call ({len(actions)}; at most {_MAX_ACTIONS}).")
    return actions


def parse_arguments(arguments: dict[str, Any]) -> list[Action]:
    """Actions from tool-call arguments: `{"action": "search", "query": ...}` (JSON dialects)
    or `{"action": 'search("...")'}` (GLM-4 raw body)."""
    value = arguments.get("action")
    if not isinstance(value, str) or not value.strip():
        raise ActionError('missing `action`: give the action name and its arguments, e.g. {"action": "search", "query": "..."}')
    name = _ALIASES.get(value.strip(), value.strip())
    if name in ACTIONS:
        # One flat schema serves all actions: models fill in keys of other actions (often
        # empty); only this action's own arguments count.
        relevant = set(ACTIONS[name]) | {"cursor"} | ({"ids"} if name == "open_url" else set())
        args = {k: v for k, v in arguments.items() if k in relevant and v is not None and v != "" and v != []}
        if "cursor" in args and "page" not in args:
            args["page"] = args.pop("cursor")
        if name == "open_url" and "url" not in args and args.get("ids"):
            ids = args.pop("ids")
            args["url"] = ids[0] if isinstance(ids, list) else ids
        return [normalize(Action(name, args))]
    return parse_action_text(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ActionError(f"{what} must be a number, not {value!r}.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise ActionError(f"{what} must be a number, not {value!r}.")


def normalize(action: Action) -> Action:
    """Check and coerce an action's arguments; unknown or missing ones are errors."""
    a = dict(action.args)
    name = action.name
    allowed = set(ACTIONS[name]) | {"cursor"}
    unknown = [k for k in a if k not in allowed]
    if unknown:
        raise ActionError(f"`{name}` has no argument {', '.join(map(repr, unknown))}; use: {USAGE}")
    if name == "search":
        query = a.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ActionError('search needs a query string: search("what to look for").')
        days = a.get("recency_days")
        if days is not None:
            days = _int(days, "recency_days")
            if days <= 0:
                raise ActionError("recency_days must be a positive number of days.")
        return Action(name, {"query": query.strip(), "recency_days": days})
    if name == "mclick":
        ids = a.get("ids")
        if ids is None:
            raise ActionError("mclick needs a list of ids: mclick([0, 3, 5]).")
        if not isinstance(ids, (list, tuple)):
            ids = [ids]
        if not ids:
            raise ActionError("mclick needs at least one id: mclick([0, 3, 5]).")
        return Action(name, {"ids": list(dict.fromkeys(_int(i, "an mclick id") for i in ids))})
    if name == "open_url":
        url = a.get("url")
        if isinstance(url, (int, float)) or (isinstance(url, str) and url.strip().isdigit()):
            return Action(name, {"url": _int(url, "the link id")})
        if not isinstance(url, str) or not url.strip():
            raise ActionError('open_url needs a URL: open_url("https://example.com/") or a link id: open_url(3).')
        return Action(name, {"url": url.strip()})
    if name == "scroll":
        page = a.get("page", a.get("cursor"))
        if page is None or (isinstance(page, str) and page.lower() in ("next", "down", "")):
            return Action(name, {"page": "next"})
        if isinstance(page, str) and page.lower() in ("prev", "previous", "up", "back"):
            return Action(name, {"page": "prev"})
        return Action(name, {"page": _int(page, "the page number")})
    pattern = a.get("pattern")
    if not isinstance(pattern, str) or not pattern.strip():
        raise ActionError('find needs the text to look for: find("keyword").')
    return Action(name, {"pattern": pattern})
