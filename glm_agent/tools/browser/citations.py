"""Citation ids: one namespace per browser session, and rendering 【id†text】 as links.

Search results, page links and mclick quotes all draw their ids from one counter, so an id
never means two things in a session and the final answer's 【7†source】 can always be
resolved to a title and URL.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import quote

from glm_agent.core.terminal import UNSAFE_CHARS, safe_text

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


# What may not appear raw in a markdown link target: whitespace, controls, what ends the target.
_URL_ESCAPE_RE = re.compile(f"[\\s()<>{re.escape(UNSAFE_CHARS)}]")


def _link_target(url: str) -> str | None:
    """`url` made fit for a markdown link target, or None when it should not become a link
    (only http and https do: pages name whatever they like)."""
    url = url.strip()
    if not re.match(r"(?i)https?://[^/\s]", url):
        return None
    return _URL_ESCAPE_RE.sub(lambda m: quote(m.group(0), safe=""), url)


def render_citations(text: str, citations: "Mapping[Any, Any] | Citations", *, style: str = "markdown") -> str:
    """Replace 【id†text】 with a link to the cited source.

    `citations` maps ids (int or str) to `{"title", "url"}` (what the browser tool puts in
    `ToolResult.data["citations"]`), or a `Citations` registry (`BrowserTool.citations`). `style="markdown"` gives
    `[title](url)`; `style="text"` gives `title (url)`. Unknown ids are left as they are.
    Titles and URLs come from web pages: controls are shown visibly, and only http(s) URLs
    become links.
    """

    if isinstance(citations, Citations):
        citations = citations.items

    def replace(match: re.Match) -> str:
        found = _lookup(citations, match.group(1))
        if found is None:
            return match.group(0)
        title, url = found
        title = " ".join(safe_text(title).split()).replace("[", "(").replace("]", ")")
        target = _link_target(url)
        if style == "text" or target is None:
            return f"{title} ({' '.join(safe_text(url).split())})"
        return f"[{title}]({target})"

    return CITATION_RE.sub(replace, text)
