"""Playwright driving a system Chromium: one browser context per agent session.

`ChromiumProcess` is one Playwright driver + one Chromium; several sessions may share it
(tests, servers). `BrowserSession` owns a context whose traffic goes through its own
`GuardProxy`, and loads pages in short-lived tabs (at most `max_tabs` at once). Everything
starts lazily on the first page load; Playwright is imported only then.

Only http(s) documents reach the model: `load` refuses other schemes before a navigation
and checks the document a tab ends up on (`navigation.py`), since a page may move itself
to `blob:`, `about:blank` and the like. Local files are loaded through the proxy
(`localfiles.py`), never as `file://`, and Chromium's popup blocker stays on.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from glm_agent.core.errors import GlmAgentError

from .guard import BLOCK_HEADER, URLGuard
from .localfiles import from_served, to_served
from .navigation import TabWatch, follow_refresh, refresh_delay, short_url, snapshot, wait_ready
from .proxy import GuardProxy

__all__ = ["BrowserError", "ChromiumProcess", "BrowserSession", "PageLoad", "find_chromium"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(GlmAgentError, RuntimeError):
    """A page could not be loaded. `kind`: blocked | dns | timeout | http | download | error | unavailable."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium to drive: the argument, `$GLM_AGENT_CHROMIUM`, or the first on PATH."""
    for candidate in (explicit, os.environ.get("GLM_AGENT_CHROMIUM")):
        if candidate:
            path = shutil.which(candidate) or (candidate if os.path.exists(candidate) else None)
            if not path:
                raise BrowserError("unavailable", f"the configured Chromium {candidate!r} does not exist.")
            return path
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise BrowserError(
        "unavailable",
        "the browser is not available: no Chromium found. Install it (Debian/Ubuntu: "
        "`apt-get install chromium`) or set GLM_AGENT_CHROMIUM to the browser's path.",
    )


class ChromiumProcess:
    """One Playwright driver and one headless Chromium, started on first use."""

    def __init__(self, executable_path: str | None = None, *, headless: bool = True, args: tuple[str, ...] = ()):
        self.executable_path = executable_path
        self.headless = headless
        self.args = args
        self._pw: Any = None
        self._browser: Any = None
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._browser is not None

    @property
    def connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def browser(self) -> Any:
        async with self._lock:
            if self._browser is not None and not self._browser.is_connected():
                # Chromium crashed or was closed: start a new one.
                self._browser = None
                try:
                    await self._pw.stop()
                except Exception:
                    pass
            if self._browser is None:
                path = find_chromium(self.executable_path)
                try:
                    from playwright.async_api import async_playwright
                except ImportError:
                    raise BrowserError(
                        "unavailable", "the browser tool needs Playwright: pip install 'glm-agent[browser]'."
                    ) from None
                pw = await async_playwright().start()
                try:
                    self._browser = await pw.chromium.launch(
                        executable_path=path,
                        headless=self.headless,
                        # Keep Chromium's popup blocker: the tool never clicks, so no page may
                        # open a window (window.open, target=_blank) of any URL.
                        ignore_default_args=["--disable-popup-blocking"],
                        args=[
                            "--blink-settings=imagesEnabled=false",  # text only: faster, less traffic
                            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
                            "--disable-background-networking",
                            "--no-first-run",
                            *self.args,
                        ],
                    )
                except Exception as exc:
                    await pw.stop()
                    raise BrowserError("unavailable", f"Chromium at {path} failed to start: {exc}") from None
                self._pw = pw
        return self._browser

    async def aclose(self) -> None:
        async with self._lock:
            if self._browser is not None:
                try:
                    await self._browser.close()
                finally:
                    await self._pw.stop()
                self._browser = self._pw = None


@dataclass
class PageLoad:
    """A page as the browser rendered it."""

    url: str
    status: int | None
    title: str
    html: str
    content_type: str = ""
    note: str = ""  # e.g. "the page did not finish loading; this is what had arrived"


class BrowserSession:
    """One browser context (cookies, storage) for one agent session."""

    def __init__(
        self,
        guard: URLGuard,
        *,
        process: ChromiumProcess | None = None,
        executable_path: str | None = None,
        headless: bool = True,
        nav_timeout: float = 15.0,
        max_tabs: int = 4,
        max_page_bytes: int = 5_000_000,
        user_agent: str | None = None,
    ):
        self.guard = guard
        self._own_process = process is None
        self.process = process or ChromiumProcess(executable_path, headless=headless)
        self.nav_timeout = nav_timeout
        self.max_page_bytes = max_page_bytes
        self.user_agent = user_agent
        self.proxy = GuardProxy(guard, max_response_bytes=max_page_bytes)
        self._tabs = asyncio.Semaphore(max_tabs)
        self._context: Any = None
        self._idle: list[Any] = []
        self._tabs_open: set[Any] = set()  # the tabs this session opened; any other page is a popup
        self._tab_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        self.watch = TabWatch()

    @property
    def started(self) -> bool:
        return self._context is not None

    async def context(self) -> Any:
        async with self._lock:
            if self._context is not None and not self.process.connected:
                self._context = None  # its browser is gone; cookies go with it
                self._idle.clear()
                self._tabs_open.clear()
                await self.proxy.aclose()
            if self._context is None:
                browser = await self.process.browser()
                await self.proxy.start()
                self._context = await browser.new_context(
                    # Every request, loopback included, goes through the guard proxy.
                    proxy={"server": self.proxy.url, "bypass": "<-loopback>"},
                    accept_downloads=False,
                    service_workers="block",
                    user_agent=self.user_agent,
                    viewport={"width": 1280, "height": 900},
                )
                self._context.on("page", lambda page: asyncio.ensure_future(self._close_popup(page)))
        return self._context

    async def load(self, url: str, timeout: float | None = None) -> PageLoad:
        """Open `url` in a new tab, wait for it, return the rendered HTML, close the tab."""
        verdict = await self.guard.check_url(url)
        if not verdict:
            raise BrowserError(verdict.kind, verdict.reason)
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        # Chromium gets the URL as the guard parsed it (no parser differences: `fi\tle:`), and
        # local files go through the proxy: Chromium is never given a file:// URL.
        parts = urlsplit(url.strip())
        target = to_served(parts.geturl()) if parts.scheme.lower() == "file" else parts.geturl()
        timeout = timeout or self.nav_timeout
        context = await self.context()
        async with self._tabs:
            # Reuse an idle tab when there is one: opening a tab costs more than loading a page.
            page = self._idle.pop() if self._idle else await self._new_tab(context)
            started = time.monotonic()
            reusable = False
            try:
                try:
                    response = await page.goto(target, wait_until="commit", timeout=timeout * 1000)
                except PlaywrightTimeout:  # not even an answer: the tab still shows its last page
                    message = f"the page {url} did not finish loading within {timeout:g} s (timeout); try another page."
                    raise BrowserError("timeout", message) from None
                except PlaywrightError as exc:
                    raise self._explain(url, str(exc), started) from None
                if response is not None and BLOCK_HEADER in response.headers:
                    await wait_ready(page, "interactive", 1.0)  # a tab closed mid-commit can hang Playwright
                    event = self.proxy.find_event(page.url, started)
                    reason = _clean(event.reason if event else (await response.text()))
                    if from_served(page.url).rstrip("/") != url.rstrip("/"):
                        reason = f"{url} redirected to {from_served(page.url)}: {reason}"
                    raise BrowserError(response.headers[BLOCK_HEADER], reason)
                if not await wait_ready(page, "interactive", timeout - (time.monotonic() - started)):
                    return await self._partial(page, url, timeout, started)
                # Give scripts and late content a moment, without waiting on slow subresources.
                await wait_ready(page, "complete", max(0.2, min(2.0, timeout - (time.monotonic() - started))))
                shot = await snapshot(page)
                delay = refresh_delay(shot.html)
                left = timeout - (time.monotonic() - started)
                if delay is not None and delay <= min(2.0, left):  # a refresh is a redirect: follow it
                    if await follow_refresh(page, self.watch, started, min(delay + 1.5, left)):
                        shot = await snapshot(page)
                self._check_document(page, url, shot.url, started)
                html = shot.html
                notes = self._stopped(page, started)
                if any(e.kind == "truncated" and e.at >= started and e.url == shot.url for e in self.proxy.events):
                    notes.append(f"the page is larger than {self.max_page_bytes} bytes; only its start was loaded.")
                if len(html) > self.max_page_bytes:
                    html = html[: self.max_page_bytes]
                    notes.append(f"the page is larger than {self.max_page_bytes} characters; only its start is shown.")
                loaded = PageLoad(
                    url=from_served(shot.url),
                    status=response.status if response is not None else None,
                    title=shot.title,
                    html=html,
                    content_type=(response.headers.get("content-type", "") if response is not None else ""),
                    note=" ".join(notes),
                )
                reusable = True
                return loaded
            finally:
                if reusable and not page.is_closed():
                    self._idle.append(page)
                else:  # a tab that failed or is still loading something is not reused
                    self._tabs_open.discard(page)
                    await _close_tab(page)

    async def _new_tab(self, context: Any) -> Any:
        async with self._tab_lock:  # `_close_popup` waits for this: its page may be this one
            page = await context.new_page()
            self._tabs_open.add(page)
        self.watch.watch(page)
        return page

    async def _close_popup(self, page: Any) -> None:
        """Close any page the session did not open itself (a popup, whatever its URL): it is
        never read, and its requests went through the proxy like any other."""
        async with self._tab_lock:
            pass
        if page not in self._tabs_open:
            await _close_tab(page)

    def _check_document(self, page: Any, url: str, final: str, started: float) -> None:
        """Refuse the document a tab ended up on unless it is an http(s) page the proxy let
        through: a page may have moved itself (meta refresh, script, form) since it loaded."""
        verdict = self.guard.check_document(final)
        if not verdict:
            if final.startswith("chrome-error:"):  # the next page failed to load: say which and why
                failed = [u for _, u in self.watch.since(page, started, ("failed",))]
                target = failed[-1] if failed else ""
                why = self.guard.check_document(target) if target else verdict
                event = self.proxy.find_event(target or None, started)
                if target and not why:
                    where = f"{url} moved on to {short_url(target)}"
                    raise BrowserError("blocked", f"{where}, which is not opened: {why.reason}")
                if event is not None:
                    raise BrowserError(event.kind, f"{url} moved on to {from_served(event.url)}: {_clean(event.reason)}")
                raise BrowserError("error", f"{url} moved on to {short_url(target) or 'another page'}, which failed to load.")
            where = f"{url} moved on to {short_url(from_served(final))}"
            raise BrowserError("blocked", f"{where}, which is not opened: {verdict.reason}")
        refused = self.proxy.refusal_for(final, started)
        if refused is not None:
            shown = from_served(final)
            where = "" if shown.rstrip("/") == url.rstrip("/") else f"{url} moved on to {shown}: "
            raise BrowserError(refused.kind, where + _clean(refused.reason))

    def _stopped(self, page: Any, started: float) -> list[str]:
        """Notes on what the page tried by itself and was stopped from doing."""
        notes = []
        for kind, target in self.watch.since(page, started):
            if kind == "popup":
                notes.append(f"the page tried to open a popup window ({short_url(target)}); popups are not opened.")
            else:
                reason = self.guard.check_document(target).reason or "the browser refused it."
                notes.append(f"the page tried to open {short_url(target)} and was stopped: {reason}")
        return notes

    async def _partial(self, page: Any, url: str, timeout: float, started: float) -> PageLoad:
        """The page never finished loading: keep what arrived, if anything did."""
        message = f"the page {url} did not finish loading within {timeout:g} s (timeout)"
        try:
            shot = await asyncio.wait_for(snapshot(page), 3.0)
        except Exception:
            raise BrowserError("timeout", message + "; try another page.") from None
        if not self.guard.check_document(shot.url):  # nothing committed yet, or not a web page
            raise BrowserError("timeout", message + "; try another page.")
        self._check_document(page, url, shot.url, started)
        from .extract import extract

        if not extract(shot.html, url).text.strip():
            raise BrowserError("timeout", message + " and showed nothing; try another page.")
        notes = [message + "; showing what had arrived.", *self._stopped(page, started)]
        return PageLoad(url=from_served(shot.url), status=None, title=shot.title, html=shot.html, note=" ".join(notes))

    def _explain(self, url: str, error: str, since: float) -> BrowserError:
        event = self.proxy.find_event(to_served(url) if url.lower().startswith("file:") else url, since)
        if event is not None and event.kind != "truncated":
            reason = _clean(event.reason)
            hop = from_served(event.url)
            if (urlsplit(hop).hostname, urlsplit(hop).port, urlsplit(hop).scheme == "file") != (
                urlsplit(url).hostname,
                urlsplit(url).port,
                urlsplit(url).scheme == "file",
            ):
                reason = f"{url} redirected to {hop}: {reason}"
            return BrowserError(event.kind, reason)
        first = error.splitlines()[0] if error else "unknown error"
        if "Download is starting" in error or "ERR_ABORTED" in error and "download" in error.lower():
            return BrowserError("download", f"{url} is a file download; downloads are not followed.")
        table = {
            "ERR_NAME_NOT_RESOLVED": ("dns", f"could not resolve the host of {url} (DNS lookup failed); check the URL."),
            "ERR_CONNECTION_REFUSED": ("error", f"the server of {url} refused the connection."),
            "ERR_CONNECTION_RESET": ("error", f"the connection to {url} was reset."),
            "ERR_TOO_MANY_REDIRECTS": ("error", f"{url} redirects in a loop."),
            "ERR_UNSAFE_REDIRECT": ("blocked", f"{url} redirects to a URL that is not http(s); such redirects are not followed."),
            "ERR_CERT": ("error", f"{url} has an invalid TLS certificate."),
            "ERR_ABORTED": ("download", f"loading {url} was aborted (a file download or a cancelled navigation)."),
        }
        for key, (kind, message) in table.items():
            if key in error:
                return BrowserError(kind, message)
        return BrowserError("error", f"could not open {url}: {first.removeprefix('Page.goto: ')}")

    async def aclose(self) -> None:
        context, self._context = self._context, None
        self._idle.clear()
        self._tabs_open.clear()
        try:
            if context is not None:
                await context.close()
        except Exception:
            pass
        await self.proxy.aclose()
        if self._own_process:
            await self.process.aclose()


async def _close_tab(page: Any) -> None:
    """Close a tab; never wait on it long (a tab closed mid-navigation can hang), and
    never fail (it may be gone with its context)."""
    try:
        await asyncio.wait_for(page.close(), 5.0)
    except Exception:
        pass


def _clean(text: str) -> str:
    return text.strip().removeprefix("glm-agent browser: ") or "blocked"
