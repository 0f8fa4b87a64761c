"""A small HTTP proxy on 127.0.0.1 through which the session's Chromium makes every request.

Why a proxy and not Playwright's `route`: route handlers never see the hops of a redirect,
so a page could redirect the browser to 169.254.169.254 unchecked. Behind a proxy Chromium
sends each hop as a new request, does no DNS itself, and the proxy connects to the very
address it checked (no DNS-rebinding window). It also caps response sizes.

Plain `http://` requests are forwarded one per connection (`Connection: close`); `https://`
and `wss://` arrive as `CONNECT host:port` and are tunnelled after the host is checked.
Requests for `http://local-files.invalid/...` (local files, see `localfiles.py`) are
answered by the proxy itself from the guard's `allow_files` folders only. Refusals are
answered with a short response carrying the `BLOCK_HEADER`, and recorded in `events` so
the tool can say exactly why a page did not load.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urldefrag, urlsplit

from .guard import BLOCK_HEADER, URLGuard, Verdict
from .localfiles import FILES_HOST, from_served, read_local_file

__all__ = ["GuardProxy", "ProxyEvent"]

_HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


@dataclass
class ProxyEvent:
    """Something the proxy refused or cut: `kind` is blocked | dns | error | truncated."""

    url: str
    kind: str
    reason: str
    at: float


class GuardProxy:
    def __init__(
        self,
        guard: URLGuard,
        *,
        max_response_bytes: int = 8_000_000,
        connect_timeout: float = 10.0,
    ):
        self.guard = guard
        self.max_response_bytes = max_response_bytes
        self.connect_timeout = connect_timeout
        self.events: deque[ProxyEvent] = deque(maxlen=200)
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, limit=1 << 16)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            try:
                await asyncio.wait_for(self._server.wait_closed(), 2)
            except asyncio.TimeoutError:
                pass
            self._server = None

    def find_event(self, url: str | None = None, since: float = 0.0) -> ProxyEvent | None:
        """The latest refusal (not a truncation) at or after `since`, preferring `url`'s host."""
        host = (urlsplit(url).hostname or "") if url else None
        for event in reversed(self.events):
            if event.at < since:
                break
            if event.kind == "truncated":
                continue
            if host is None or event.url == url or (urlsplit(event.url).hostname or event.url.split(":")[0]) == host:
                return event
        # A redirect hop has a different host than the URL asked for: any refusal will do.
        for event in reversed(self.events):
            if event.at >= since and event.kind != "truncated":
                return event
        return None

    def refusal_for(self, url: str, since: float) -> ProxyEvent | None:
        """The refusal of exactly this http URL (fragment aside) at or after `since`."""
        url = urldefrag(url)[0]
        for event in reversed(self.events):
            if event.at < since:
                break
            if event.kind != "truncated" and event.url == url:
                return event
        return None

    # -- connection handling -------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _version = request_line.split(" ", 2)
            if method.upper() == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, header_lines, reader, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
            pass
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the proxy is shutting down
        finally:
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    def _refuse(self, writer: asyncio.StreamWriter, url: str, verdict: Verdict) -> None:
        self.events.append(ProxyEvent(url, verdict.kind, verdict.reason, time.monotonic()))
        status = "403 Forbidden" if verdict.kind == "blocked" else "502 Bad Gateway"
        body = f"glm-agent browser: {verdict.reason}".encode()
        writer.write(
            (
                f"HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\n"
                f"{BLOCK_HEADER}: {verdict.kind}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )

    async def _open(self, verdict: Verdict, port: int):
        last: Exception | None = None
        for addr in verdict.addresses:
            try:
                return await asyncio.wait_for(asyncio.open_connection(addr, port), self.connect_timeout)
            except (OSError, asyncio.TimeoutError) as exc:
                last = exc
        raise ConnectionError(f"could not connect: {last or 'no address'}")

    async def _tunnel(self, target: str, reader, writer) -> None:
        host, _, port_text = target.rpartition(":")
        port = int(port_text)
        url = f"https://{target}"
        upstream = await self._connect(host, port, target, url, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        # One tunnel carries many responses (HTTP/2): cap it generously.
        await self._pipe_both(reader, writer, up_reader, up_writer, url, self.max_response_bytes * 4)

    async def _connect(self, host: str, port: int, where: str, url: str, writer):
        """Check the host's addresses and connect to the one checked; on refusal or failure
        answer the browser with the reason and return None."""
        verdict = await self.guard.check_host(host, port)
        if not verdict:
            self._refuse(writer, url, verdict)
            return None
        try:
            return await self._open(verdict, port)
        except ConnectionError as exc:
            self._refuse(writer, url, Verdict(False, "error", f"connection to {where} failed ({exc})."))
            return None

    async def _forward(self, method, target, header_lines, reader, writer) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            self._refuse(writer, target, Verdict(False, "error", f"unsupported proxy request {target!r}."))
            return
        if parts.hostname.lower() == FILES_HOST:
            await self._serve_file(method, target, writer)
            return
        port = parts.port or 80
        upstream = await self._connect(parts.hostname, port, parts.netloc, target, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        headers = [h for h in header_lines if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
        out = [f"{method} {path} HTTP/1.1", *headers, "Connection: close", "", ""]
        up_writer.write("\r\n".join(out).encode("latin-1"))
        length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
        try:
            if length:
                up_writer.write(await reader.readexactly(length))
            await up_writer.drain()
            # Rewrite the response head so Chromium never reuses this connection.
            head = await up_reader.readuntil(b"\r\n\r\n")
            status_line, *resp_headers = head.decode("latin-1").split("\r\n")
            kept = [h for h in resp_headers if h and h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
            chunked = any(h.lower().replace(" ", "").startswith("transfer-encoding:chunked") for h in kept)
            if not chunked:
                # The body ends when the connection closes, so a body cut at the size cap is
                # still a complete response to Chromium, not a broken one.
                kept = [h for h in kept if not h.lower().startswith("content-length:")]
            writer.write("\r\n".join([status_line, *kept, "Connection: close", "", ""]).encode("latin-1"))
            await self._copy(up_reader, writer, target, self.max_response_bytes)
        finally:
            up_writer.close()

    async def _serve_file(self, method: str, target: str, writer) -> None:
        """Answer a served local-file URL (see `localfiles.py`) from the allowed folders."""
        verdict = self.guard.check_file(from_served(target))
        if not verdict:
            self._refuse(writer, target, Verdict(False, "blocked", verdict.reason))
            return
        if method.upper() not in ("GET", "HEAD"):
            self._refuse(writer, target, Verdict(False, "error", f"local files can only be read ({method} refused)."))
            return
        cap = self.max_response_bytes
        try:
            body, ctype, cut = await asyncio.to_thread(read_local_file, target, self.guard.path_allowed, cap)
        except PermissionError as exc:
            self._refuse(writer, target, Verdict(False, "blocked", f"file:// URLs are blocked: {exc}."))
            return
        except OSError as exc:  # missing file, a folder: an ordinary 404 page
            body, ctype, cut = f"<title>Not found</title><p>{exc}</p>".encode(), "text/html; charset=utf-8", False
            status = "404 Not Found"
        else:
            status = "200 OK"
        if cut:
            self.events.append(ProxyEvent(target, "truncated", f"file larger than {cap} bytes was cut", time.monotonic()))
        head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode("latin-1") + (b"" if method.upper() == "HEAD" else body))
        await writer.drain()

    async def _copy(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, url: str, cap: int) -> None:
        total = 0
        while True:
            chunk = await src.read(65536)
            if not chunk:
                return
            total += len(chunk)
            if total > cap:
                self.events.append(
                    ProxyEvent(url, "truncated", f"response larger than {cap} bytes was cut", time.monotonic())
                )
                return
            dst.write(chunk)
            await dst.drain()

    async def _pipe_both(self, reader, writer, up_reader, up_writer, url: str, cap: int) -> None:
        async def upstream() -> None:
            try:
                while chunk := await reader.read(65536):
                    up_writer.write(chunk)
                    await up_writer.drain()
            finally:
                up_writer.close()

        up = asyncio.ensure_future(upstream())
        try:
            await self._copy(up_reader, writer, url, cap)
        finally:
            up.cancel()
            await asyncio.gather(up, return_exceptions=True)
            up_writer.close()
