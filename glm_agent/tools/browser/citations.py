"""Citation ids: one namespace per browser session, and rendering 【id†text】 as links.

Search results, page links and mclick quotes all draw their ids from one counter, so an id
never means two things in a session and the final answer's 【7†source】 can always be
resolved to a title and URL.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

__all__ = ["Citations", "render_citations", "CITATION_RE"]

# 【7†title】, 【7†title†host】, 【7】 (and the ASCII-bracket variant some models emit).
CITATION_RE = re.compile(r"【(\d+)(?:†([^】]*))?】")


class Citations:
    def __init__(self) -> None:
        self.items: dict[int, dict[str, str]] = {}
        self._next = 0

    def add(self, title: str, url: str, kind: str = "link") -> int:
        cid = self._next
        self._next += 1
        self.items[cid] = {"title": title or url, "url": url, "kind": kind}
        return cid

    def get(self, cid: int) -> dict[str, str] | None:
        return self.items.get(cid)

    def subset(self, ids) -> dict[str, dict[str, str]]:
        """The entries for `ids`, keyed by str (JSON-safe), as put in ToolResult.data."""
        return {str(i): {"title": self.items[i]["title"], "url": self.items[i]["url"]} for i in ids if i in self.items}

    def __len__(self) -> int:
        return len(self.items)


def _lookup(citations: Mapping[Any, Any], cid: str) -> tuple[str, str] | None:
    entry = citations.get(cid)
    if entry is None and cid.isdigit():
        entry = citations.get(int(cid))
    if entry is None:
        return None
    if isinstance(entry, Mapping):
        return str(entry.get("title") or entry.get("url", "")), str(entry.get("url", ""))
    title, url = entry  # a (title, url) pair
    return str(title), str(url)


def render_citations(text: str, citations: "Mapping[Any, Any] | Citations", *, style: str = "markdown") -> str:
    """Replace 【id†text】 with a link to the cited source.

    `citations` maps ids (int or str) to `{"title", "url"}` (what the browser tool puts in
    `ToolResult.data["citations"]`), or a `Citations` registry (`BrowserTool.citations`). `style="markdown"` gives
    `[title](url)`; `style="text"` gives `title (url)`. Unknown ids are left as they are.
    """

    if isinstance(citations, Citations):
        citations = citations.items

    def replace(match: re.Match) -> str:
        found = _lookup(citations, match.group(1))
        if found is None:
            return match.group(0)
        title, url = found
        title = title.replace("[", "(").replace("]", ")")
        if style == "text":
            return f"{title} ({url})"
        return f"[{title}]({url.replace(' ', '%20').replace(')', '%29')})"

    return CITATION_RE.sub(replace, text)
