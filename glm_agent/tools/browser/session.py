"""Playwright driving a system Chromium: one browser context per agent session.

`ChromiumProcess` is one Playwright driver + one Chromium; several sessions may share it
(tests, servers). `BrowserSession` owns a context whose traffic goes through its own
`GuardProxy`, and loads pages in short-lived tabs (at most `max_tabs` at once). Everything
starts lazily on the first page load; Playwright is imported only then.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .guard import BLOCK_HEADER, URLGuard
from .proxy import GuardProxy

__all__ = ["BrowserError", "ChromiumProcess", "BrowserSession", "PageLoad", "find_chromium"]

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


class BrowserError(RuntimeError):
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
        self._lock = asyncio.Lock()

    @property
    def started(self) -> bool:
        return self._context is not None

    async def context(self) -> Any:
        async with self._lock:
            if self._context is not None and not self.process.connected:
                self._context = None  # its browser is gone; cookies go with it
                self._idle.clear()
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
        return self._context

    async def load(self, url: str, timeout: float | None = None) -> PageLoad:
        """Open `url` in a new tab, wait for it, return the rendered HTML, close the tab."""
        verdict = await self.guard.check_url(url)
        if not verdict:
            raise BrowserError(verdict.kind, verdict.reason)
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        timeout = timeout or self.nav_timeout
        context = await self.context()
        async with self._tabs:
            # Reuse an idle tab when there is one: opening a tab costs more than loading a page.
            page = self._idle.pop() if self._idle else await context.new_page()
            started = time.monotonic()
            reusable = False
            try:
                try:
                    response = await page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
                except PlaywrightTimeout:
                    return await self._partial(page, url, timeout)
                except PlaywrightError as exc:
                    raise self._explain(url, str(exc), started) from None
                if response is not None and BLOCK_HEADER in response.headers:
                    event = self.proxy.find_event(page.url, started)
                    reason = _clean(event.reason if event else (await response.text()))
                    if page.url.rstrip("/") != url.rstrip("/"):
                        reason = f"{url} redirected to {page.url}: {reason}"
                    raise BrowserError(response.headers[BLOCK_HEADER], reason)
                # Give scripts and late content a moment, without waiting on slow subresources.
                left = max(0.2, min(2.0, timeout - (time.monotonic() - started)))
                try:
                    await page.wait_for_load_state("load", timeout=left * 1000)
                except PlaywrightTimeout:
                    pass
                html = await page.content()
                note = ""
                if any(e.kind == "truncated" and e.at >= started and e.url == page.url for e in self.proxy.events):
                    note = f"the page is larger than {self.max_page_bytes} bytes; only its start was loaded."
                if len(html) > self.max_page_bytes:
                    html = html[: self.max_page_bytes]
                    note = f"the page is larger than {self.max_page_bytes} characters; only its start is shown."
                loaded = PageLoad(
                    url=page.url,
                    status=response.status if response is not None else None,
                    title=await page.title(),
                    html=html,
                    content_type=(response.headers.get("content-type", "") if response is not None else ""),
                    note=note,
                )
                reusable = True
                return loaded
            finally:
                if reusable and not page.is_closed():
                    self._idle.append(page)
                else:  # a tab that failed or is still loading something is not reused
                    try:
                        await page.close()
                    except PlaywrightError:
                        pass

    async def _partial(self, page: Any, url: str, timeout: float) -> PageLoad:
        """The page never finished loading: keep what arrived, if anything did."""
        message = f"the page {url} did not finish loading within {timeout:g} s (timeout)"
        try:
            html = await asyncio.wait_for(page.content(), 2.0)
            title = await asyncio.wait_for(page.title(), 1.0)
        except Exception:
            raise BrowserError("timeout", message + "; try another page.") from None
        from .extract import extract

        if not extract(html, url).text.strip():
            raise BrowserError("timeout", message + " and showed nothing; try another page.")
        return PageLoad(url=page.url or url, status=None, title=title, html=html, note=message + "; showing what had arrived.")

    def _explain(self, url: str, error: str, since: float) -> BrowserError:
        event = self.proxy.find_event(url, since)
        if event is not None and event.kind != "truncated":
            reason = _clean(event.reason)
            if (urlsplit(event.url).hostname, urlsplit(event.url).port) != (urlsplit(url).hostname, urlsplit(url).port):
                reason = f"{url} redirected to {event.url}: {reason}"
            return BrowserError(event.kind, reason)
        first = error.splitlines()[0] if error else "unknown error"
        if "Download is starting" in error or "ERR_ABORTED" in error and "download" in error.lower():
            return BrowserError("download", f"{url} is a file download; downloads are not followed.")
        table = {
            "ERR_NAME_NOT_RESOLVED": ("dns", f"could not resolve the host of {url} (DNS lookup failed); check the URL."),
            "ERR_CONNECTION_REFUSED": ("error", f"the server of {url} refused the connection."),
            "ERR_CONNECTION_RESET": ("error", f"the connection to {url} was reset."),
            "ERR_TOO_MANY_REDIRECTS": ("error", f"{url} redirects in a loop."),
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
        try:
            if context is not None:
                await context.close()
        except Exception:
            pass
        await self.proxy.aclose()
        if self._own_process:
            await self.process.aclose()


def _clean(text: str) -> str:
    return text.strip().removeprefix("glm-agent browser: ") or "blocked"
