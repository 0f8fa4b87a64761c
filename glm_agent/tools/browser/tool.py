"""`BrowserTool`: the GLM-4 `simple_browser` protocol on a real Chromium.

Actions: `search(query, recency_days)` -> numbered results; `mclick([ids])` -> quotes of
several pages opened in parallel; `open_url(url | id)` -> the page as text, paged;
`scroll(page)` and `find(pattern)` on the current page. Ids shown anywhere (results,
page links, quotes) come from one per-session namespace, and every result carries
`data["citations"] = {id: {title, url}}` so the CLI can render 【id†title】 as links.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlsplit

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolResult

from .actions import Action, ActionError, parse_arguments
from .citations import Citations
from .extract import extract
from .guard import URLGuard
from .search import LocalIndexProvider, SearchError, SearchProvider, make_provider, provider_from_env
from .session import BrowserError, BrowserSession, ChromiumProcess, PageLoad

__all__ = ["BrowserTool"]

_DESCRIPTION = """\
A web browser. Functions (write one per line):
`search(query: str, recency_days: int)`: search the web; shows numbered results. `recency_days` limits results to recent pages.
`mclick(ids: list[int])`: open several results or links by id at once (choose 3-10, from different trustworthy sources) and get quotes of their main text.
`open_url(url: str)`: open a URL (or a link id) and read the page; long pages come in parts.
`scroll(page: int)`: show another part of the current page (no argument: the next part).
`find(pattern: str)`: find text in the current page.
Cite what you use as 【{id}†{title}】 with the ids shown in results and quotes."""


@dataclass
class _View:
    """What `scroll` and `find` work on: the last search results or opened page."""

    title: str
    url: str
    parts: list[str]
    citation_ids: list[int] = field(default_factory=list)
    current: int = 0
    kind: str = "page"


def _split_parts(text: str, size: int) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    n = 0
    for line in text.splitlines():
        while len(line) > size:  # a giant line (minified text): cut it
            if cur:
                parts.append("\n".join(cur))
                cur, n = [], 0
            parts.append(line[:size])
            line = line[size:]
        if n + len(line) + 1 > size and cur:
            parts.append("\n".join(cur).strip("\n"))
            cur, n = [], 0
        cur.append(line)
        n += len(line) + 1
    if cur or not parts:
        parts.append("\n".join(cur).strip("\n"))
    return parts


def _host(url: str) -> str:
    parts = urlsplit(url)
    return parts.hostname or ("local file" if parts.scheme == "file" else url)


class BrowserTool(Tool):
    """GLM-4 `simple_browser`: search, open pages in parallel, read and cite them.

    Args:
        search: a `SearchProvider`, a provider name ("local", "searxng", "bing",
            "duckduckgo") with `search_options`, or None for `provider_from_env()`.
        search_options: keyword options for the named provider (e.g. `base_url`, `source`).
        allow: allow-list of private hosts the browser may reach ("127.0.0.1:8000", ...).
        allow_private: reach private/loopback addresses at all (trusted setups only).
        allow_files: folders whose files the browser may open as `file://` URLs (none by
            default). A local search index over a folder adds that folder: its results are
            `file://` URLs. Pages can never open files outside these folders.
        resolver: `async (host, port) -> [addresses]` instead of the system DNS (tests).
        executable_path: Chromium to drive (default: `$GLM_AGENT_CHROMIUM` or `chromium`).
        browser: a shared `ChromiumProcess` (one Chromium for many sessions).
        nav_timeout: seconds to wait for a page; action_timeout: seconds per action.
        max_tabs: pages loaded at once; max_page_bytes: cap on one response/page.
        page_chars: characters per part of a page; quote_chars: per mclick quote.
        max_results: search results shown.
    """

    # GLM-4 knows this tool by this name (its `simple_browser` built-in); the `action` enum
    # below is what lets dialects route a call named `search` or `open_url` here.
    name = "simple_browser"
    max_retries = 5  # pages fail to load now and then; that is not a broken tool
    description = _DESCRIPTION
    parameters = {
        "type": "object",
        "properties": {
            "action": {
                "type": "string",
                "enum": ["search", "mclick", "open_url", "scroll", "find"],
                "description": "What to do.",
            },
            "query": {"type": "string", "description": "search: what to search for."},
            "recency_days": {"type": "integer", "description": "search: only pages from the last N days."},
            "ids": {"type": "array", "items": {"type": "integer"}, "description": "mclick: result/link ids to open."},
            "url": {"type": "string", "description": "open_url: the URL (or a link id) to open."},
            "page": {"type": "integer", "description": "scroll: the part of the page to show (1 = first)."},
            "pattern": {"type": "string", "description": "find: text to find in the current page."},
        },
        "required": ["action"],
    }

    def __init__(
        self,
        search: SearchProvider | str | None = None,
        *,
        search_options: dict[str, Any] | None = None,
        allow: Sequence[str] = (),
        allow_private: bool = False,
        allow_files: Sequence[str | Path] = (),
        resolver: Any = None,
        executable_path: str | None = None,
        browser: ChromiumProcess | None = None,
        headless: bool = True,
        nav_timeout: float = 15.0,
        action_timeout: float = 60.0,
        max_tabs: int = 4,
        max_page_bytes: int = 5_000_000,
        page_chars: int = 4000,
        quote_chars: int = 2500,
        max_results: int = 10,
    ):
        self.guard = URLGuard(allow, allow_private=allow_private, allow_files=allow_files, resolver=resolver)
        if isinstance(search, str):
            search = make_provider(search, **(search_options or {}))
        self._provider: SearchProvider | None = search
        if isinstance(search, LocalIndexProvider) and search.folder is not None and not search.base_url:
            self.guard.add_file_root(search.folder)  # its results are file:// URLs
        self.session = BrowserSession(
            self.guard,
            process=browser,
            executable_path=executable_path,
            headless=headless,
            nav_timeout=nav_timeout,
            max_tabs=max_tabs,
            max_page_bytes=max_page_bytes,
        )
        self.action_timeout = action_timeout
        self.timeout = action_timeout * 5 + 10  # backstop for the agent loop; actions time out first
        self.page_chars = page_chars
        self.quote_chars = quote_chars
        self.max_results = max_results
        self.citations = Citations()
        self.view: _View | None = None

    # -- public ------------------------------------------------------------------------

    @property
    def provider(self) -> SearchProvider:
        if self._provider is None:
            try:
                self._provider = provider_from_env()
            except ValueError as exc:
                raise SearchError(f"search is not configured correctly: {exc}") from None
        return self._provider

    async def call(self, arguments: dict[str, Any], ctx: ToolContext | None = None) -> ToolResult:
        try:
            actions = parse_arguments(arguments)
        except ActionError as exc:
            return ToolResult(content=f"Error: {exc}", is_error=True, metadata="system_error")
        results = []
        for action in actions:
            try:
                result = await asyncio.wait_for(self._run(action), self.action_timeout)
            except asyncio.TimeoutError:
                result = ToolResult(
                    content=f"Error: `{action}` took longer than {self.action_timeout:g} s and was stopped; "
                    "try another page or a simpler action.",
                    is_error=True,
                    metadata="system_error",
                )
            except (BrowserError, SearchError, ActionError) as exc:
                result = ToolResult(content=f"Error: {exc}", is_error=True, metadata="system_error")
            except Exception as exc:  # a browser crash must not end the session: report it
                result = ToolResult(
                    content=f"Error: the browser failed during `{action}` ({type(exc).__name__}: {exc}).",
                    is_error=True,
                    metadata="system_error",
                )
            results.append(result)
        return results[0] if len(results) == 1 else _merge(results)

    async def run(self, action_text: str) -> ToolResult:
        """Run GLM-4 action text directly: `await tool.run('search("x")')`."""
        return await self.call({"action": action_text})

    async def aclose(self) -> None:
        await self.session.aclose()
        if self._provider is not None:
            await self._provider.aclose()

    # -- actions ---------------------------------------------------------------------

    async def _run(self, action: Action) -> ToolResult:
        handler = {
            "search": self._search,
            "mclick": self._mclick,
            "open_url": self._open_url,
            "scroll": self._scroll,
            "find": self._find,
        }[action.name]
        return await handler(**action.args)

    async def _search(self, query: str, recency_days: int | None = None) -> ToolResult:
        hits = await self.provider.search(query, recency_days=recency_days, count=self.max_results)
        if not hits:
            scope = f" from the last {recency_days} days" if recency_days else ""
            return ToolResult(
                content=f"No results for {query!r}{scope}. Try other words or a broader query.",
                metadata="browser_result",
                data={"citations": {}, "action": "search"},
            )
        lines: list[str] = []
        ids: list[int] = []
        for hit in hits:
            cid = self.citations.add(hit.title, hit.url, "search")
            ids.append(cid)
            title = hit.title.replace("】", "]").replace("†", "+")
            lines.append(f"# 【{cid}†{title}†{_host(hit.url)}】")
            snippet = f"{hit.date}: {hit.snippet}" if hit.date and hit.snippet else hit.snippet
            if snippet:
                lines.append(snippet)
        text = "\n".join(lines)
        self.view = _View(f"Search results for {query!r}", "", [text], ids, kind="search")
        return ToolResult(
            content=text + "\nVisible: 0% - 100%",
            metadata="browser_result",
            data={"citations": self.citations.subset(ids), "action": "search", "query": query},
        )

    def _target(self, ref: int | str) -> tuple[str, str]:
        """A URL from a URL string or a citation id."""
        if isinstance(ref, int):
            entry = self.citations.get(ref)
            if entry is None:
                raise ActionError(self._unknown_id(ref))
            return entry["url"], entry["title"]
        return ref, ""

    def _unknown_id(self, ref: int) -> str:
        if not self.citations.items:
            return f"there is no id {ref}: nothing has been searched or opened yet. Use search(\"...\") first."
        if self.view is not None and self.view.citation_ids:
            shown = self.view.citation_ids
            known = f"ids {shown[0]}-{shown[-1]}" if len(shown) > 1 else f"id {shown[0]}"
            return f"there is no id {ref}; the current {'results show' if self.view.kind == 'search' else 'page shows'} {known}."
        return f"there is no id {ref}; use an id shown in search results or page links."

    def _page_view(self, load: PageLoad) -> tuple[_View, dict]:
        page = extract(load.html, load.url, number_link=lambda url, text: self.citations.add(text, url, "link"))
        title = load.title or page.title or load.url
        view = _View(title, load.url, _split_parts(page.text or "(the page has no text)", self.page_chars))
        view.citation_ids = [link.id for link in page.links]
        return view, self.citations.subset(view.citation_ids)

    def _render(self, view: _View, note: str = "") -> str:
        n = len(view.parts)
        total = sum(len(p) for p in view.parts) or 1
        start = sum(len(p) for p in view.parts[: view.current])
        end = start + len(view.parts[view.current])
        head = f"TITLE: {view.title}\nURL: {view.url}"
        if n > 1:
            head += f"\n[part {view.current + 1} of {n}]"
        if note:
            head += f"\nNote: {note}"
        foot = f"Visible: {100 * start // total}% - {100 * end // total}%"
        if view.current + 1 < n:
            foot += f". More below: scroll() or scroll({view.current + 2})."
        return f"{head}\n\n{view.parts[view.current]}\n\n{foot}"

    async def _open_url(self, url: int | str) -> ToolResult:
        target, _title = self._target(url)
        load = await self.session.load(target)
        if load.status is not None and load.status >= 400:
            text = extract(load.html, load.url).text
            detail = f" The page says: {text[:300]}" if text.strip() else ""
            return ToolResult(
                content=f"Error: {load.url} answered HTTP {load.status}{_reason(load.status)}.{detail}",
                is_error=True,
                metadata="system_error",
                data={"status": load.status, "url": load.url},
            )
        view, cites = self._page_view(load)
        cid = self.citations.add(view.title, load.url, "page")
        cites[str(cid)] = {"title": view.title, "url": load.url}
        self.view = view
        return ToolResult(
            content=self._render(view, load.note),
            metadata="browser_result",
            full_output="\n\n".join(view.parts),
            data={"citations": cites, "action": "open_url", "url": load.url, "page_id": cid, "status": load.status},
        )

    async def _fetch_quote(self, ref: int) -> tuple[str, str, str, str] | str:
        """(title, url, text, note) of a page's main text, or why it failed."""
        url, title = self._target(ref)
        try:
            load = await self.session.load(url)
        except BrowserError as exc:
            return f"【{ref}】 {title or url} could not be opened: {exc}"
        if load.status is not None and load.status >= 400:
            return f"【{ref}】 {title or url} could not be opened: HTTP {load.status}{_reason(load.status)}."
        page = extract(load.html, load.url, main_only=True, number_link=lambda _u, _t: -1)
        text = re.sub(r"【-1†([^】]*)】", r"\1", page.text).strip()  # quotes keep link text, not ids
        title = load.title or page.title or title or load.url
        if not text:
            return f"【{ref}】 {title} has no readable text."
        return title, load.url, text, load.note

    async def _mclick(self, ids: list[int]) -> ToolResult:
        unknown = [i for i in ids if self.citations.get(i) is None]
        if len(unknown) == len(ids):
            raise ActionError(self._unknown_id(unknown[0]))
        known = [i for i in ids if i not in unknown]
        fetched = await asyncio.gather(*(self._fetch_quote(i) for i in known))
        blocks: list[str] = []
        cites: dict[str, Any] = {}
        for item in fetched:  # quote ids in the order the model asked for
            if isinstance(item, str):
                blocks.append(item)
                continue
            title, url, text, note = item
            qid = self.citations.add(title, url, "quote")
            cites[str(qid)] = {"title": title, "url": url}
            if len(text) > self.quote_chars:
                cut = text[: self.quote_chars]
                if "\n" in cut[self.quote_chars // 2 :]:
                    cut = cut[: cut.rfind("\n")]
                text = cut.rstrip() + f"\n… (quote cut; open_url({qid}) reads the whole page)"
            extra = f"\n({note})" if note else ""
            blocks.append(f"【{qid}†{title}†{_host(url)}】\nURL: {url}{extra}\n\n{text}")
        for i in unknown:
            blocks.append(f"【{i}】 unknown id: {self._unknown_id(i)}")
        content = "\n\n---\n\n".join(blocks)
        if not cites:
            return ToolResult(
                content="Error: none of the pages could be opened.\n\n" + content,
                is_error=True,
                metadata="system_error",
                data={"citations": {}, "action": "mclick"},
            )
        return ToolResult(
            content=content,
            metadata="quote_result",
            data={"citations": cites, "action": "mclick", "quote_ids": [int(k) for k in cites]},
        )

    async def _scroll(self, page: int | str) -> ToolResult:
        view = self._need_view("scroll")
        n = len(view.parts)
        if page == "next":
            if view.current + 1 >= n:
                raise ActionError(f"already at the end of the page (part {n} of {n}).")
            index = view.current + 1
        elif page == "prev":
            if view.current == 0:
                raise ActionError("already at the top of the page (part 1).")
            index = view.current - 1
        else:
            index = int(page) - 1
            if not 0 <= index < n:
                raise ActionError(f"there is no part {page}: this page has {n} part{'s' if n > 1 else ''} (1-{n}).")
        view.current = index
        return ToolResult(
            content=self._render(view),
            metadata="browser_result",
            data={"citations": self.citations.subset(view.citation_ids), "action": "scroll", "part": index + 1},
        )

    async def _find(self, pattern: str) -> ToolResult:
        view = self._need_view("find")
        needle = pattern.lower()
        matches: list[str] = []
        count = 0
        for part_no, part in enumerate(view.parts, 1):
            lower = part.lower()
            start = lower.find(needle)
            while start != -1:
                count += 1
                if len(matches) < 20:
                    a, b = max(0, start - 100), min(len(part), start + len(pattern) + 100)
                    context = part[a:b].replace("\n", " ")
                    matches.append(f"[part {part_no}] {'…' if a else ''}{context}{'…' if b < len(part) else ''}")
                start = lower.find(needle, start + max(1, len(needle)))
        if not count:
            return ToolResult(
                content=f"No match for {pattern!r} in {view.title}.",
                metadata="browser_result",
                data={"citations": {}, "action": "find", "matches": 0},
            )
        more = f"\n(and {count - len(matches)} more)" if count > len(matches) else ""
        text = f"{count} match{'es' if count > 1 else ''} for {pattern!r} in {view.title}:\n" + "\n".join(matches) + more
        return ToolResult(
            content=text + "\nUse scroll(part) to read around a match.",
            metadata="browser_result",
            data={"citations": self.citations.subset(view.citation_ids), "action": "find", "matches": count},
        )

    def _need_view(self, what: str) -> _View:
        if self.view is None:
            raise ActionError(f"no page is open to {what}; use search(\"...\") or open_url(\"...\") first.")
        return self.view


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 410: "Gone", 429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}  # fmt: skip


def _reason(status: int) -> str:
    reason = _REASONS.get(status)
    if status == 404:
        return " Not Found: the page does not exist; check the URL or search for it"
    return f" {reason}" if reason else ""


def _merge(results: list[ToolResult]) -> ToolResult:
    cites: dict[str, Any] = {}
    for r in results:
        cites.update(r.data.get("citations", {}))
    ok = [r for r in results if not r.is_error]
    return ToolResult(
        content="\n\n".join(r.content for r in results),
        is_error=not ok,
        metadata=(ok[-1].metadata if ok else "system_error"),
        data={"citations": cites, "results": [r.data for r in results]},
    )

