"""The browser never shows the model anything but http(s) pages the guard let through.

Attacks, each through every entry point that can start it: the model (`open_url`, `mclick`
on results and links), and pages themselves (meta refresh, `location=`, form submits,
iframes, `window.open`), from ordinary sites and from the local search index (a folder of
files). Targets: `file:` (/etc/passwd and a secret file next to the index folder), `data:`,
`blob:`, `about:`, `view-source:`, `chrome:`, `javascript:`. And addresses: IPv4 in every
spelling Chromium accepts and IPv6 forms that carry an IPv4 address, classified (unit) and
refused by the session's proxy for real requests Chromium makes (end to end).

Everything runs against servers started here on 127.0.0.1 and a real Chromium.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from glm_agent.tools.browser import (
    BrowserTool,
    LocalIndexProvider,
    SearchResult,
    URLGuard,
)
from glm_agent.tools.browser.addresses import classify_address, embedded_ipv4, host_ip
from glm_agent.tools.browser.guard import BLOCK_HEADER
from glm_agent.tools.browser.proxy import GuardProxy

sys.path.insert(0, str(Path(__file__).parents[1] / "tools" / "browser"))
from browser_site import exchange  # noqa: E402

# Text that must never reach the model: /etc/passwd, a file beside the index folder, the
# bodies of data: and blob: URLs, and Chromium's internal pages.
PASSWD = "root:x:0:0"
OUTSIDE = "OUTSIDE-SECRET-5151"
DATA = "DATA-SECRET-6262"
BLOB = "BLOB-SECRET-7373"
MARKERS = (PASSWD, OUTSIDE, DATA, BLOB, "Command Line", "Executable Path")

# name -> JavaScript expression for the target URL (`OUTSIDE_URL` is filled in per test)
TARGETS = {
    "file": '"file:///etc/passwd"',
    "other-file": "OUTSIDE_URL",
    "data": f'"data:text/html,<title>d</title>{DATA}"',
    "blob": f'URL.createObjectURL(new Blob(["<title>b</title>{BLOB}"], {{type: "text/html"}}))',
    "about": '"about:blank"',
    "view-source": '"view-source:file:///etc/passwd"',
    "chrome": '"chrome://version"',
}
# How a page starts a navigation to `target` (a JS variable).
PATHS = {
    "meta": "const m = document.createElement('meta'); m.httpEquiv = 'refresh';"
    " m.content = '0;url=' + target; document.head.appendChild(m);",
    "location": "location.href = target;",
    "form": "const f = document.createElement('form'); f.method = 'get'; f.action = target;"
    " document.body.appendChild(f); f.submit();",
    "iframe": "const i = document.createElement('iframe'); i.src = target; document.body.appendChild(i);",
    "popup": "window.open(target); window.open(INTERNAL_URL); window.open('/popup-target');",
}


def _hostile_page(path: str, target: str, outside_url: str, internal_url: str) -> str:
    # The slow stylesheet holds the page's load event back, so the navigation it starts has
    # begun before the tool reads the page (no race decides the test).
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Hostile page</title>"
        "<link rel='stylesheet' href='/slow.css'></head><body><main><h1>Hostile page</h1>"
        "<p>An ordinary looking article about lighthouses.</p></main>"
        f"<script>const OUTSIDE_URL = {outside_url!r}; const INTERNAL_URL = {internal_url!r}; const target = {TARGETS[target]}; {PATHS[path]}</script>"
        "</body></html>"
    )


class Hostile:
    """Pages that attack the browser, on 127.0.0.1; `internal` is a second server whose
    hits are counted (it must never see a request)."""

    def __init__(self, outside_url: str):
        self.outside_url = outside_url
        self.hits: list[str] = []
        self.internal_hits: list[str] = []
        self.stop = threading.Event()
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler(main)) for main in (True, False)]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
        self.port = self.servers[0].server_address[1]
        self.internal_port = self.servers[1].server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def _page(self, path: str) -> tuple[int, str, dict]:
        parts = path.strip("/").split("/")
        if parts[0] == "attack" and len(parts) == 3:
            internal = f"http://127.0.0.1:{self.internal_port}/admin"
            return 200, _hostile_page(parts[1], parts[2], self.outside_url, internal), {}
        if parts[0] == "redirect":  # /redirect/<scheme>: a 302 to a non-http URL
            location = {"file": "file:///etc/passwd", "data": f"data:text/html,{DATA}", "about": "about:blank"}[parts[1]]
            return 302, "", {"Location": location}
        if parts[0] == "frames":  # /frames?<url>&<url>...: iframes to every URL given
            return 200, "<title>Frames</title><p>frames</p>", {}
        if parts[0] == "links":
            links = "".join(
                f'<li><a href="{u}">link {i}</a></li>'
                for i, u in enumerate(["file:///etc/passwd", self.outside_url, "/redirect/file", "/redirect/data", "/redirect/about"])
            )
            return 200, f"<title>Links</title><main><h1>Links</h1><ul>{links}</ul></main>", {}
        if parts[0] == "slow.css":
            self.stop.wait(0.8)
            return 200, "body { color: black }", {"Content-Type": "text/css"}
        return 200, "<title>Plain</title><main><p>plain page</p></main>", {}

    def _handler(self, main: bool):
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if not main:
                    owner.internal_hits.append(self.path)
                    status, body, headers = 200, "<title>internal</title>INTERNAL-ADMIN-PAGE", {}
                else:
                    owner.hits.append(self.path)
                    status, body, headers = owner._page(self.path.split("?")[0])
                    if self.path.startswith("/frames?"):
                        urls = self.path.split("?", 1)[1].split("&")
                        body += "".join(f'<iframe src="{u}"></iframe>' for u in urls)
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", headers.pop("Content-Type", "text/html; charset=utf-8"))
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture(scope="module")
def outside(tmp_path_factory):
    """A secret file beside the index folder, and the index folder itself."""
    base = tmp_path_factory.mktemp("browser-guard")
    (base / "outside").mkdir()
    secret = base / "outside" / "secret.html"
    secret.write_text(f"<title>secret</title><p>{OUTSIDE}</p>")
    return base, secret


@pytest.fixture(scope="module")
def hostile(outside):
    server = Hostile(outside[1].as_uri())
    yield server
    server.close()


@pytest_asyncio.fixture(loop_scope="module")
async def make_tool(chromium, hostile):
    tools = []

    def make(search=None, **kwargs):
        kwargs.setdefault("allow", [f"127.0.0.1:{hostile.port}"])
        kwargs.setdefault("nav_timeout", 6)
        tool = BrowserTool(search, browser=chromium, **kwargs)
        tools.append(tool)
        return tool

    yield make
    for tool in tools:
        await tool.aclose()


def _leaks(text: str) -> list[str]:
    return [m for m in MARKERS if m in text]


def _explains(text: str, scheme: str) -> bool:
    """The observation says that a `scheme` URL was refused, and why."""
    prefix = {"other-file": "file:", "chrome": "chrome:"}.get(scheme, f"{scheme}:")
    refused = any(w in text for w in ("was stopped", "not opened", "not supported", "blocked", "not followed"))
    return refused and prefix in text


# -- URLs the model asks for ------------------------------------------------------------

pytestmark = pytest.mark.asyncio(loop_scope="module")

MODEL_URLS = [
    (f"data:text/html,<title>d</title>{DATA}", "`data:` URLs are not supported"),
    (f"DATA:text/html;base64,{__import__('base64').b64encode(DATA.encode()).decode()}", "`data:` URLs are not supported"),
    (f"  data:text/html,{DATA}", "`data:` URLs are not supported"),
    ("blob:http://127.0.0.1/0b5e3c9a-0000-4000-8000-000000000000", "`blob:` URLs are not supported"),
    ("about:blank", "`about:` URLs are not supported"),
    ("about:srcdoc", "`about:` URLs are not supported"),
    ("file:///etc/passwd", "file:// URLs are blocked"),
    ("file://localhost/etc/passwd", "file:// URLs are blocked"),
    ("fi\tle:///etc/passwd", "file:// URLs are blocked"),
    ("javascript:document.write('x')", "`javascript:` URLs are not supported"),
    ("jav\tascript:alert(1)", "`javascript:` URLs are not supported"),
    ("filesystem:http://127.0.0.1/temporary/x", "`filesystem:` URLs are not supported"),
    ("chrome://version", "`chrome:` URLs are not supported"),
    ("view-source:file:///etc/passwd", "`view-source:` URLs are not supported"),
    ("ws://127.0.0.1:1/", "`ws:` URLs are not supported"),
    ("http://local-files.invalid/etc/passwd", "file:// URLs are blocked"),
]


@pytest.mark.parametrize("url, words", MODEL_URLS, ids=[u[:24] for u, _ in MODEL_URLS])
async def test_open_url_refuses_non_web_schemes(make_tool, url, words):
    tool = make_tool()
    result = await tool.call({"action": "open_url", "url": url})
    assert result.is_error and words in result.content, result.content
    assert not _leaks(result.content + (result.full_output or ""))


async def test_mclick_refuses_non_web_results_and_links(make_tool, hostile):
    """Results from a search provider and links on a page are only opened if http(s)."""

    class Provider:
        name = "hostile"

        async def search(self, query, recency_days=None, count=10):
            return [SearchResult(f"r{i}", url) for i, (url, _) in enumerate(MODEL_URLS)] + [
                SearchResult("plain", hostile.url("/plain"))
            ]

        async def aclose(self):
            pass

    tool = make_tool(Provider())
    found = await tool.run('search("anything")')
    ids = [int(k) for k in found.data["citations"]]
    quotes = await tool.run(f"mclick({ids[:9]})")
    quotes2 = await tool.run(f"mclick({ids[9:]})")
    text = quotes.content + quotes2.content
    assert not _leaks(text), text
    assert text.count("could not be opened") == len(MODEL_URLS), text
    assert "plain page" in text  # the one web page among them still comes back

    page = await tool.run(f'open_url("{hostile.url("/links")}")')
    link_ids = [int(k) for k, v in page.data["citations"].items() if "link" in v["title"]]
    assert len(link_ids) == 5, page.content
    clicked = await tool.run(f"mclick({link_ids})")
    assert clicked.is_error and not _leaks(clicked.content), clicked.content
    assert clicked.content.count("file:// URLs are blocked") == 2, clicked.content
    assert clicked.content.count("not http(s); such redirects are not followed") == 3, clicked.content


# -- navigations pages start themselves ---------------------------------------------------

NAVIGATIONS = [(p, t) for p in ("meta", "location", "form") for t in TARGETS]


@pytest.mark.parametrize("path, target", NAVIGATIONS)
async def test_page_cannot_move_itself_to_non_web_schemes(make_tool, hostile, path, target):
    tool = make_tool()
    result = await tool.run(f'open_url("{hostile.url(f"/attack/{path}/{target}")}")')
    assert not _leaks(result.content + (result.full_output or "")), result.content
    assert _explains(result.content, target), result.content
    if not result.is_error:  # stopped by Chromium: the page itself, with a note saying so
        assert "Hostile page" in result.content and "Note: " in result.content


@pytest.mark.parametrize("target", list(TARGETS))
async def test_frames_of_non_web_schemes_never_reach_the_model(make_tool, hostile, target):
    tool = make_tool()
    result = await tool.run(f'open_url("{hostile.url(f"/attack/iframe/{target}")}")')
    assert not result.is_error and "Hostile page" in result.content, result.content
    assert not _leaks(result.content + (result.full_output or "")), result.content
    if target in ("file", "other-file", "view-source", "chrome"):  # Chromium refuses these frames
        assert _explains(result.content, target), result.content


@pytest.mark.parametrize("target", list(TARGETS))
async def test_popups_are_closed_and_never_read(make_tool, hostile, target):
    """Chromium's popup blocker stops most popups; any that opens anyway is closed at once,
    its requests went through the proxy (the internal server never sees one), and it is
    never read."""
    tool = make_tool()
    hostile.internal_hits.clear()
    result = await tool.run(f'open_url("{hostile.url(f"/attack/popup/{target}")}")')
    await asyncio.sleep(0.5)  # time for a popup to load, were one left open
    assert not _leaks(result.content), result.content
    assert "INTERNAL-ADMIN-PAGE" not in result.content and hostile.internal_hits == []
    context = await tool.session.context()
    assert [p.url for p in context.pages] == [hostile.url(f"/attack/popup/{target}")]  # the tool's own tab only


# -- the local search index ---------------------------------------------------------------

INDEX_PAGES = {
    "meta-passwd.html": '<meta http-equiv="refresh" content="0;url=file:///etc/passwd">',
    "script-passwd.html": '<script>location = "file:///etc/passwd"</script>',
    "meta-relative.html": '<meta http-equiv="refresh" content="0;url=../outside/secret.html">',
    "script-outside.html": "<script>location = OUTSIDE_URL</script>",
    "script-dir.html": '<script>location = "file:///etc/"</script>',
    "iframe-passwd.html": '<iframe src="file:///etc/passwd"></iframe><iframe src="../outside/secret.html"></iframe>',
    "form-passwd.html": '<form id="f" action="file:///etc/passwd"></form><script>f.submit()</script>',
    "blob-nav.html": f'<script>location = URL.createObjectURL(new Blob(["{BLOB}"], {{type: "text/html"}}))</script>',
    "base-escape.html": '<base href="file:///etc/"><p><a href="passwd">the passwd guide</a></p>',
    "link-outside.html": '<p><a href="../outside/secret.html">the outside guide</a> <a href="guide.html">the guide</a></p>',
}


@pytest.fixture
def index_folder(outside):
    base, secret = outside
    folder = base / "index"
    folder.mkdir(exist_ok=True)
    for name, attack in INDEX_PAGES.items():
        (folder / name).write_text(
            f"<html><head><title>Hostile {name}</title><script>const OUTSIDE_URL = {secret.as_uri()!r}</script>"
            f"<link rel='stylesheet' href='slow.css'></head><body><main><p>hostile index page {name}</p>{attack}</main></body></html>"
        )
    (folder / "guide.html").write_text("<title>Guide</title><main><p>The real guide to lighthouses.</p></main>")
    for name, points_to in (("leak.html", "/etc/passwd"), ("leak2.html", str(secret))):
        if not (folder / name).is_symlink():
            os.symlink(points_to, folder / name)  # symlinks out of the folder
    return folder


async def test_local_index_pages_cannot_reach_other_files(make_tool, index_folder):
    tool = make_tool(LocalIndexProvider(index_folder), allow=[])
    found = await tool.run('search("hostile index page")')
    ids = [int(k) for k in found.data["citations"]]
    assert len(ids) == len(INDEX_PAGES), found.content
    for cid in ids:
        result = await tool.run(f"open_url({cid})")
        name = found.data["citations"][str(cid)]["title"]
        assert not _leaks(result.content + (result.full_output or "")), (name, result.content)
        if "base-escape" in name or "link-outside" in name:
            assert not result.is_error, result.content
            links = [int(k) for k, v in result.data["citations"].items() if "guide" in v["title"] and k != str(result.data["page_id"])]
            clicked = await tool.run(f"mclick({links})")
            assert not _leaks(clicked.content), clicked.content
            assert "file:// URLs are blocked" in clicked.content, clicked.content
            if "link-outside" in name:  # the link inside the folder still works
                assert "The real guide to lighthouses." in clicked.content
        else:
            assert "blocked" in result.content or "was stopped" in result.content or "not opened" in result.content, (name, result.content)
    both = await tool.run(f"mclick({ids})")
    assert not _leaks(both.content), both.content


async def test_local_index_never_reads_files_outside_its_folder(make_tool, index_folder):
    tool = make_tool(LocalIndexProvider(index_folder), allow=[])
    for query in ("root daemon bin nologin", "OUTSIDE-SECRET-5151 secret"):
        found = await tool.run(f'search("{query}")')
        assert not _leaks(found.content), found.content
    for name in ("leak.html", "leak2.html"):
        opened = await tool.run(f'open_url("{(index_folder / name).as_uri()}")')
        assert opened.is_error and "file:// URLs are blocked" in opened.content and not _leaks(opened.content)
    guide = await tool.run(f'open_url("{(index_folder / "guide.html").as_uri()}")')
    assert not guide.is_error and "The real guide to lighthouses." in guide.content
    assert guide.data["url"] == (index_folder / "guide.html").as_uri()  # the model sees file:// URLs
    tabbed = await tool.call({"action": "open_url", "url": f"fi\tle://{index_folder / 'guide.html'}"})
    assert not tabbed.is_error and "The real guide to lighthouses." in tabbed.content
    context = await tool.session.context()
    assert context.pages and all(p.url.startswith("http://local-files.invalid/") for p in context.pages)


# -- addresses: every spelling of a private address ---------------------------------------

IPV4_SPELLINGS = [
    "2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7f000001", "017700000001", "0x7F.0.0.1",
    "127.0.0.1.", "127.0.1", "%31%32%37.0.0.1", "\uff11\uff12\uff17.0.0.1", "127\u30020\u30020\u30021",
]  # fmt: skip


def _refusing_resolver(calls):
    async def resolve(host, port):
        calls.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    return resolve


@pytest.mark.parametrize("host", IPV4_SPELLINGS)
async def test_ipv4_spellings_are_the_address_they_spell(host):
    assert host_ip(host) == ipaddress.IPv4Address("127.0.0.1")
    calls: list[str] = []
    verdict = await URLGuard(resolver=_refusing_resolver(calls)).check_url(f"http://{host}:8080/")
    assert not verdict and verdict.kind == "blocked" and "127.0.0.1" in verdict.reason and "loopback" in verdict.reason
    assert calls == []  # an address is never handed to a resolver
    allowed = URLGuard(["127.0.0.1:8080"], resolver=_refusing_resolver(calls))
    assert await allowed.check_url(f"http://{host}:8080/")  # the allow-list knows it as 127.0.0.1 too


# (address, words in the reason, the IPv4 address it carries)
IPV6_FORMS = [
    ("::ffff:127.0.0.1", "loopback", "127.0.0.1"),  # IPv4-mapped
    ("::ffff:0:10.0.0.1", "private network", "10.0.0.1"),  # IPv4-translated
    ("::127.0.0.1", "loopback", "127.0.0.1"),  # IPv4-compatible
    ("::169.254.169.254", "link-local", "169.254.169.254"),
    ("64:ff9b::127.0.0.1", "loopback", "127.0.0.1"),  # NAT64
    ("64:ff9b::a9fe:a9fe", "link-local", "169.254.169.254"),
    ("64:ff9b::10.1.2.3", "private network", "10.1.2.3"),
    ("2002:7f00:1::1", "loopback", "127.0.0.1"),  # 6to4
    ("2002:a9fe:a9fe::", "link-local", "169.254.169.254"),
    ("2002:c0a8:101::1", "private network", "192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback", "127.0.0.1"),  # Teredo, client inverted
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private network", "10.0.0.1"),
    ("2600::5efe:127.0.0.1", "loopback", "127.0.0.1"),  # ISATAP interface id, global prefix
    ("2600:1::200:5efe:a00:1", "private network", "10.0.0.1"),
    ("fe80::5efe:a9fe:a9fe", "link-local", "169.254.169.254"),
]
IPV6_PRIVATE = [
    ("fec0::1", "site-local"),
    ("fec0:1234::abcd", "site-local"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("64:ff9b:1:ffff::8.8.8.8", "local-use NAT64"),
    ("fd00::1", "private network"),
    ("fe80::1", "link-local"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("::8.8.8.8", "deprecated IPv4-compatible"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo"),  # Teredo with a public client
]
IPV6_PUBLIC = ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2002:808:808::1", "2606:4700:4700::1111", "2600::5efe:8.8.8.8"]


@pytest.mark.parametrize("address, words, v4", IPV6_FORMS)
async def test_ipv6_forms_are_judged_by_the_ipv4_they_carry(address, words, v4):
    ip = ipaddress.IPv6Address(address)
    assert embedded_ipv4(ip) == ipaddress.IPv4Address(v4)
    why = classify_address(ip)
    assert why and words in why and v4 in why
    verdict = await URLGuard().check_url(f"http://[{address}]:8080/")
    assert not verdict and verdict.kind == "blocked" and words in verdict.reason


@pytest.mark.parametrize("address, words", IPV6_PRIVATE)
async def test_non_public_ipv6_ranges(address, words):
    why = classify_address(ipaddress.IPv6Address(address))
    assert why and words in why
    assert not await URLGuard().check_url(f"http://[{address}]/")


@pytest.mark.parametrize("address", IPV6_PUBLIC)
async def test_public_addresses_stay_reachable(address):
    assert classify_address(ipaddress.IPv6Address(address)) is None


async def test_names_resolving_to_ipv6_forms_of_private_addresses():
    async def resolve(host, port):
        return {"nat64.test": ["64:ff9b::a9fe:a9fe"], "six.test": ["2002:a00:1::"], "site.test": ["fec0::5"]}[host]

    guard = URLGuard(resolver=resolve)
    for host, words in (("nat64.test", "169.254.169.254"), ("six.test", "10.0.0.1"), ("site.test", "site-local")):
        verdict = await guard.check_url(f"http://{host}/")
        assert not verdict and verdict.kind == "blocked" and words in verdict.reason, verdict.reason


async def test_proxy_refuses_every_spelling_sent_to_it(hostile):
    """Clients other than Chromium may send odd spellings as they are: the proxy reads them
    as Chromium would, and never asks a resolver about an address."""
    calls: list[str] = []
    proxy = GuardProxy(URLGuard(resolver=_refusing_resolver(calls)))
    port = await proxy.start()
    hostile.internal_hits.clear()
    try:
        hosts = [f"{h}:{hostile.internal_port}" for h in IPV4_SPELLINGS[:9]]
        hosts += [f"[{a}]:{hostile.internal_port}" for a, _, _ in IPV6_FORMS]
        for host in hosts:
            answer = await exchange(port, f"GET http://{host}/admin HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            assert answer.startswith(b"HTTP/1.1 403") and f"{BLOCK_HEADER}: blocked".encode() in answer, (host, answer[:300])
            tunnel = await exchange(port, f"CONNECT {host} HTTP/1.1\r\n\r\n".encode())
            assert tunnel.startswith(b"HTTP/1.1 403"), (host, tunnel[:300])
        assert calls == [] and hostile.internal_hits == []
    finally:
        await proxy.aclose()


async def test_chromium_requests_to_private_address_forms_are_refused(make_tool, hostile):
    """Real requests from Chromium (frames a page asks for), to the internal server in every
    spelling and to names resolving to IPv6 forms: the proxy refuses each as non-public."""
    names = {"nat64.test": "64:ff9b::7f00:1", "sixtofour.test": "2002:7f00:1::", "compat.test": "::7f00:1",
             "sitelocal.test": "fec0::1", "mapped.test": "::ffff:127.0.0.1", "teredo.test": "2001:0:4136:e378:8000:63bf:80ff:fffe"}  # fmt: skip

    async def resolve(host, port):
        if host in names:
            return [names[host]]
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    tool = make_tool(resolver=resolve)
    p = hostile.internal_port
    urls = [f"http://{h}:{p}/admin" for h in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1")]
    urls += [f"http://[{a}]:{p}/admin" for a, _, v4 in IPV6_FORMS if v4 == "127.0.0.1"]
    urls += [f"http://[{a}]:{p}/admin" for a in ("fec0::1", "64:ff9b:1::7f00:1")]
    urls += [f"http://{name}:{p}/admin" for name in names]
    hostile.internal_hits.clear()
    result = await tool.run(f'open_url("{hostile.url("/frames?" + "&".join(urls))}")')
    assert not result.is_error and "INTERNAL-ADMIN-PAGE" not in result.content
    await asyncio.sleep(0.5)
    assert hostile.internal_hits == []
    events = list(tool.session.proxy.events)
    wrong = []
    for url in urls:
        host = urlsplit(url).hostname
        try:
            ip = host_ip(host)
        except ValueError:
            ip = None
        matching = [e for e in events if _same_host(e.url, host, ip)]
        if not matching or any(e.kind != "blocked" for e in matching):
            wrong.append((url, [(e.kind, e.reason) for e in matching]))
        elif not any(w in matching[-1].reason for w in ("127.0.0.1", "site-local", "NAT64")):
            wrong.append((url, matching[-1].reason))  # the reason names what the address really is
    assert wrong == []


def _same_host(event_url: str, host: str, ip) -> bool:
    other = urlsplit(event_url).hostname or ""
    if ip is None:
        return other == host
    try:
        return host_ip(other) == ip
    except ValueError:
        return False
