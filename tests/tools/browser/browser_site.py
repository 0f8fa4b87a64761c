"""A small local website for the browser tests and `bench/browser.py`, served on 127.0.0.1.

Pages: an index, three articles (with nav, cookie banner, footer, a table), a long page,
a Chinese UTF-8 page, a GBK page (charset only in <meta>), a page built by JavaScript,
plus the failure cases: a 404, a page that never finishes loading, one that sends half a
page and hangs, redirects (same site, to 169.254.169.254, to another local server that is
not allowed), and a download.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Site", "PAGES", "fake_resolver"]

_CHROME = """<header class="site-header"><a href="/">Home</a> <a href="/about">About us</a></header>
<nav><ul><li><a href="/python.html">Python</a></li><li><a href="/rust.html">Rust</a></li></ul></nav>
<div id="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>"""
_FOOT = "<footer>Copyright 2026 Example Docs. All rights reserved.</footer>"


def _page(title: str, body: str, lang: str = "en", charset: str = "utf-8") -> str:
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="{charset}"><title>{title}</title>'
        f'<meta name="date" content="2026-11-01"></head><body>{_CHROME}<main>{body}</main>{_FOOT}</body></html>'
    )


_LONG = "".join(
    f"<h2>Section {i}</h2><p>"
    + " ".join(f"Paragraph {i} sentence {j} about the history of lighthouses and coastal navigation." for j in range(6))
    + ("<p>The keeper's logbook mentions the zanzibar lamp exactly here.</p>" if i == 37 else "")
    + "</p>"
    for i in range(1, 61)
)

PAGES: dict[str, str] = {
    "/": _page(
        "Example Docs",
        "<h1>Example Docs</h1><p>Guides to programming languages.</p><ul>"
        '<li><a href="/python.html">Python guide</a></li><li><a href="/rust.html">Rust guide</a></li>'
        '<li><a href="/go.html">Go guide</a></li><li><a href="/lighthouses.html">Lighthouses (long)</a></li>'
        '<li><a href="/zh.html">长城</a></li><li><a href="/gbk.html">故宫</a></li></ul>'
        '<p>Slow mirrors: <a href="/slow/a.html">A</a> <a href="/slow/b.html">B</a> <a href="/slow/c.html">C</a></p>',
    ),
    "/python.html": _page(
        "Python guide",
        "<article><h1>The Python programming language</h1>"
        "<p>Python is a high-level programming language created by <b>Guido van Rossum</b> and first released in 1991.</p>"
        "<h2>Versions</h2><table><tr><th>Version</th><th>Year</th></tr><tr><td>Python 2.0</td><td>2000</td></tr>"
        "<tr><td>Python 3.0</td><td>2008</td></tr></table>"
        '<p>See also the <a href="/rust.html">Rust guide</a> and the <a href="/missing.html">old FAQ</a>.</p>'
        "<script>console.log('tracking')</script></article>",
    ),
    "/rust.html": _page(
        "Rust guide",
        "<h1>The Rust programming language</h1><p>Rust is a systems programming language focused on memory safety "
        "without garbage collection. Rust 1.0 was released in May 2015.</p><ul><li>Ownership</li><li>Borrowing</li>"
        '<li>Lifetimes</li></ul><p>Back to <a href="/python.html">Python</a>.</p>',
    ),
    "/go.html": _page(
        "Go guide",
        "<h1>The Go programming language</h1><p>Go is a statically typed, compiled programming language designed at "
        "Google. Go 1.0 was released in March 2012.</p>",
    ),
    "/lighthouses.html": _page("Lighthouses of the world", "<h1>Lighthouses of the world</h1>" + _LONG),
    "/zh.html": _page(
        "长城简介",
        "<h1>长城</h1><p>长城是中国古代的军事防御工程，东起山海关，西至嘉峪关，全长两万多公里。</p>"
        "<p>明长城是现存最完整的部分。</p>",
        lang="zh",
    ),
    "/js.html": (
        "<!doctype html><html><head><meta charset='utf-8'><title>Rendered by script</title></head><body>"
        "<div id='app'>Loading…</div><script>document.getElementById('app').innerHTML = "
        "'<h1>Dynamic content</h1><p>This paragraph was written by JavaScript.</p>';</script></body></html>"
    ),
}

_GBK = (
    '<!doctype html><html><head><meta http-equiv="Content-Type" content="text/html; charset=gbk">'
    "<title>故宫博物院</title></head><body><h1>故宫</h1><p>故宫位于北京中轴线的中心，是明清两代的皇家宫殿。</p>"
    "</body></html>"
).encode("gbk")

_PARTIAL_HEAD = (
    "<!doctype html><html><head><meta charset='utf-8'><title>Half a page</title></head><body>"
    "<h1>Streaming report</h1><p>The first paragraph arrived before the server stalled.</p>"
)


class Site:
    """`with Site() as site: site.url("/python.html")`; `other` is a second server whose
    hits are counted, to prove blocked requests never reach it."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.hits: list[str] = []
        self.other_hits: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0  # most /slow/ requests served at the same time
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(main=True))
        self.other = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(main=False))
        for s in (self.server, self.other):
            s.daemon_threads = True
            s.block_on_close = False
        self.port = self.server.server_address[1]
        self.other_port = self.other.server_address[1]
        self._threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (self.server, self.other)]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "Site":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.stop.set()
        for s in (self.server, self.other):
            s.shutdown()
            s.server_close()

    def _handler(self, main: bool):
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str = "text/html; charset=utf-8", **headers: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k.replace("_", "-"), v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                if not main:
                    site.other_hits.append(path)
                    self._send(200, b"<h1>secret internal page</h1>")
                    return
                site.hits.append(path)
                if path in PAGES:
                    self._send(200, PAGES[path].encode())
                elif path == "/gbk.html":
                    self._send(200, _GBK, "text/html")  # charset only in the page's <meta>
                elif path == "/slow.html":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html")
                    self.end_headers()
                    site.stop.wait(60)  # never sends a byte of the body
                elif path == "/partial.html":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    self.wfile.write(_PARTIAL_HEAD.encode())
                    self.wfile.flush()
                    site.stop.wait(60)
                elif path.startswith("/slow/"):  # /slow/<n>.html: answers after 0.6 s
                    with site._lock:
                        site.in_flight += 1
                        site.max_in_flight = max(site.max_in_flight, site.in_flight)
                    site.stop.wait(0.6)
                    with site._lock:
                        site.in_flight -= 1
                    name = path.rsplit("/", 1)[-1]
                    self._send(200, _page(f"Slow page {name}", f"<h1>Slow page {name}</h1><p>Served slowly.</p>").encode())
                elif path == "/huge.html":  # ~2 MB of text
                    rows = "".join(f"<p>Row {i} of the huge table of numbers.</p>" for i in range(50000))
                    self._send(200, _page("Huge page", "<h1>Huge</h1>" + rows).encode())
                elif path == "/redirect-nowhere":
                    self._send(302, b"", Location="http://nowhere.invalid/")
                elif path == "/redirect-ok":
                    self._send(302, b"", Location="/rust.html")
                elif path == "/redirect-metadata":
                    self._send(302, b"", Location="http://169.254.169.254/latest/meta-data/")
                elif path == "/redirect-internal":
                    self._send(302, b"", Location=f"http://127.0.0.1:{site.other_port}/admin")
                elif path == "/report.csv":
                    self._send(200, b"a,b\n1,2\n", "text/csv", Content_Disposition='attachment; filename="report.csv"')
                elif path == "/favicon.ico":
                    self._send(404, b"")
                else:
                    self._send(404, b"<html><head><title>404</title></head><body><h1>Not Found</h1><p>No such page.</p></body></html>")

        return Handler


def fake_resolver(names: dict[str, str]):
    """A resolver that knows only `names` (host -> address): no DNS traffic leaves the machine."""

    async def resolve(host: str, port: int) -> list[str]:
        if host in names:
            return [names[host]]
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [host]
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    return resolve


async def exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes to 127.0.0.1:`port` and read until it closes (proxy tests)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out
