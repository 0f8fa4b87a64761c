"""Fetch pages outside Chromium (the local search index's crawler) under the browser's rules.

`GuardedFetcher.get(url)` reaches only what a browser session with the same `URLGuard` may
reach:
- every hop is checked before it is requested (`URLGuard.check_url`: http(s) only, the host
  and every address it resolves to), redirects are followed one hop at a time, at most
  `max_redirects`;
- requests go through a `GuardProxy`, which checks the host again and connects to the very
  address it checked (a name that resolves elsewhere a moment later, DNS rebinding, gains
  nothing) and caps the response size;
- bodies are read up to `max_bytes`.
A refusal raises `FetchRefused` with the guard's reason. An injected httpx `transport`
(tests) replaces the proxy and the network, not the per-hop checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from glm_agent.core.errors import GlmAgentError

from .guard import BLOCK_HEADER, URLGuard
from .proxy import GuardProxy

__all__ = ["GuardedFetcher", "FetchRefused", "Page"]

_REDIRECTS = (301, 302, 303, 307, 308)


class FetchRefused(GlmAgentError):
    """The guard refused a hop; the message says which URL and why."""


@dataclass
class Page:
    """A fetched response: final URL, status, headers and (capped) body."""

    url: str
    status: int
    headers: httpx.Headers
    content: bytes


class GuardedFetcher:
    def __init__(
        self,
        guard: URLGuard,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
        max_redirects: int = 10,
        max_bytes: int = 8_000_000,
        headers: dict[str, str] | None = None,
    ):
        self.guard = guard
        self.transport = transport
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self.headers = headers or {}
        self._proxy: GuardProxy | None = None
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> "GuardedFetcher":
        proxy = None
        if self.transport is None:
            self._proxy = GuardProxy(self.guard, max_response_bytes=self.max_bytes, connect_timeout=self.timeout)
            await self._proxy.start()
            proxy = self._proxy.url
        # trust_env=False: no HTTP(S)_PROXY or NO_PROXY from the environment around the guard.
        self._client = httpx.AsyncClient(transport=self.transport, proxy=proxy, trust_env=False,
                                         follow_redirects=False, timeout=self.timeout, headers=self.headers)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._proxy is not None:
            await self._proxy.aclose()
            self._proxy = None

    async def get(self, url: str) -> Page:
        """GET `url`, following redirects hop by hop. Raises FetchRefused, or httpx.HTTPError
        when the site cannot be reached."""
        assert self._client is not None, "use `async with GuardedFetcher(...)`"
        first = url

        def refused(reason: str) -> FetchRefused:
            where = url if url == first else f"{first} redirected to {url}"
            return FetchRefused(f"{where}: {reason}")

        for _ in range(self.max_redirects + 1):
            verdict = await self.guard.check_url(url)
            if not verdict:
                raise refused(verdict.reason)
            try:
                page = await self._get_once(url)
            except httpx.ProxyError:  # an https CONNECT the proxy refused
                raise refused(self._proxy_reason(url)) from None
            if page.headers.get(BLOCK_HEADER):
                raise refused(self._proxy_reason(url))
            location = page.headers.get("location")
            if page.status not in _REDIRECTS or not location:
                return page
            url = urljoin(page.url, location.strip())
        raise refused(f"more than {self.max_redirects} redirects.")

    async def _get_once(self, url: str) -> Page:
        assert self._client is not None
        async with self._client.stream("GET", url) as resp:
            chunks, size = [], 0
            async for chunk in resp.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.max_bytes:
                    break
            return Page(str(resp.url), resp.status_code, resp.headers, b"".join(chunks)[: self.max_bytes])

    def _proxy_reason(self, url: str) -> str:
        event = self._proxy.find_event(url) if self._proxy is not None else None
        return event.reason if event is not None else "refused by the address guard."
