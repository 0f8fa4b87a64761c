"""What a tab did on its own while the tool waited on it, and what it ended up showing.

Pages start navigations themselves (`<meta refresh>`, `location=`, form submits, frames,
`window.open`). Requests to http(s) go through the guard proxy; everything else never does,
so the session checks the *document* a tab shows before its text reaches the model
(`snapshot` reads URL, title and HTML of one document in one step, so a navigation in
between cannot swap them), and notes the navigations Chromium itself stopped (it reports
them on the console) so the model is told why a page did not move on, and the popups a page opened.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["Snapshot", "snapshot", "TabWatch", "refresh_delay", "follow_refresh", "wait_ready", "short_url"]

# Chromium's console messages for navigations it refuses to a page: file:, chrome:,
# view-source:, filesystem: ("local resource") and top-level data: URLs.
_REFUSED = re.compile(r"^Not allowed to (?:load local resource|navigate top frame to \S+ URL): (\S+)")

_META = re.compile(r"<meta\b[^>]*>", re.I)
_REFRESH = re.compile(r"""http-equiv\s*=\s*["']?\s*refresh""", re.I)
_DELAY = re.compile(r"""\bcontent\s*=\s*["']?\s*(\d+(?:\.\d*)?)""", re.I)

_SNAPSHOT_JS = """() => {
  const d = document;
  let html = d.doctype ? new XMLSerializer().serializeToString(d.doctype) : "";
  if (d.documentElement) html += d.documentElement.outerHTML;
  return [window.location.href, d.title, html];
}"""


@dataclass
class Snapshot:
    url: str
    title: str
    html: str


async def snapshot(page: Any, attempts: int = 3) -> Snapshot:
    """URL, title and HTML of the document the tab shows, all from that one document."""
    from playwright.async_api import Error as PlaywrightError

    for attempt in range(attempts):
        try:
            url, title, html = await asyncio.wait_for(page.evaluate(_SNAPSHOT_JS), 5.0)
            return Snapshot(str(url), str(title or ""), str(html or ""))
        except (PlaywrightError, asyncio.TimeoutError):
            if attempt + 1 == attempts:  # navigating the whole time: fall back to what Playwright reports
                return Snapshot(page.url, "", "")
            await asyncio.sleep(0.1)
    raise AssertionError("unreachable")


def short_url(url: str, limit: int = 200) -> str:
    """A URL fit for a message: a `data:` URL without its content, others cut at `limit`."""
    if url[:5].lower() == "data:":
        return url.split(",", 1)[0][:limit] + ",…"
    return url if len(url) <= limit else url[:limit] + "…"


async def wait_ready(page: Any, state: str, seconds: float) -> bool:
    """Wait until the tab's document is `interactive` (DOMContentLoaded) or `complete` (load).

    Playwright's own load states are not enough alone: after a navigation Chromium refused
    (a form submitted to `file:`), Playwright keeps waiting for a document that never
    comes, so the document's `readyState` is asked too."""
    from playwright.async_api import Error as PlaywrightError

    lifecycle = "domcontentloaded" if state == "interactive" else "load"
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await page.wait_for_load_state(lifecycle, timeout=max(1.0, min(left, 0.3) * 1000))  # ms; 0 = forever
            return True
        except PlaywrightError:  # includes Playwright's TimeoutError
            pass
        try:  # (an evaluation waits for a document to exist: bound it)
            ready = await asyncio.wait_for(page.evaluate("document.readyState"), max(0.05, min(left, 1.0)))
        except (PlaywrightError, asyncio.TimeoutError):  # navigating right now
            ready = "loading"
        if ready == "complete" or (ready == "interactive" and state == "interactive"):
            return True
    return False


def refresh_delay(html: str) -> float | None:
    """Seconds until the page's `<meta http-equiv="refresh">` moves it on (None: it has none)."""
    for tag in _META.findall(html[:200_000]):
        if _REFRESH.search(tag):
            match = _DELAY.search(tag)
            return float(match.group(1)) if match else None
    return None


async def follow_refresh(page: Any, watch: "TabWatch", since: float, seconds: float) -> bool:
    """Wait up to `seconds` for a page with a quick meta refresh to move on (a meta refresh
    starts only after the page loaded, so without this the tool would race it). True if
    the tab navigated or Chromium refused the navigation."""
    start_url = page.url
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if page.url != start_url:
            await wait_ready(page, "complete", max(0.1, deadline - time.monotonic()))
            return True
        if any(kind == "navigation" for kind, _ in watch.since(page, since)):
            return True
        await asyncio.sleep(0.05)
    return False


class TabWatch:
    """Listens to the session's tabs: navigations Chromium refused, and popups (closed)."""

    def __init__(self) -> None:
        # (tab id, when, kind, url); kind: navigation (refused by Chromium) | popup | failed
        self.events: deque[tuple[int, float, str, str]] = deque(maxlen=100)

    def watch(self, page: Any) -> None:
        tab = id(page)

        def on_console(message: Any) -> None:
            if message.type == "error":
                match = _REFUSED.match(message.text)
                if match:
                    self.events.append((tab, time.monotonic(), "navigation", match.group(1)[:300]))

        def on_popup(popup: Any) -> None:  # the session closes it (`BrowserSession._close_popup`)
            self.events.append((tab, time.monotonic(), "popup", popup.url[:300] or "about:blank"))

        def on_failed(request: Any) -> None:
            try:
                main = request.is_navigation_request() and request.frame == page.main_frame
            except Exception:  # the frame is already gone
                main = False
            if main:
                self.events.append((tab, time.monotonic(), "failed", request.url[:2000]))

        page.on("console", on_console)
        page.on("popup", on_popup)
        page.on("requestfailed", on_failed)

    def since(self, page: Any, started: float, kinds: tuple[str, ...] = ("navigation", "popup")) -> list[tuple[str, str]]:
        """(kind, url) of what this tab tried and was stopped from since `started`, oldest first."""
        tab = id(page)
        return list(
            dict.fromkeys((kind, url) for t, at, kind, url in self.events if t == tab and at >= started and kind in kinds)
        )
