"""Attack: a crawled page of the local search index leads the crawler to a private address.

The crawler (LocalIndexProvider over a site URL) fetches with the browser's rules: the site
it was given is allowed, every other host must be public or allowed, and each redirect hop
is checked before it is requested. Here a site on 127.0.0.1 redirects to a second local
server (standing in for 169.254.169.254 or an intranet host: both are refused alike) in many
spellings, over http and https, directly and after a same-site hop, and links to it
directly; the second server must see no connection at all and nothing of it may be indexed,
unless it is allowed explicitly. Everything stays on loopback.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from glm_agent.tools.browser import LocalIndexProvider, SearchError


class Server:
    """A tiny site on 127.0.0.1 that records every connection it accepts."""

    def __init__(self, routes: dict[str, tuple[int, str, str]]):
        self.routes = routes  # path -> (status, location, body)
        self.connections: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self) -> None:
                server.connections.append(self.client_address[0])
                super().setup()

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                status, location, body = server.routes.get(self.path, (404, "", "<title>404</title>"))
                data = body.encode()
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> "Server":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


SECRET = "<html><head><title>Instance credentials</title></head><body><p>zebracorn secret token</p></body></html>"


@pytest.fixture
def inner():
    with Server({"/secret": (200, "", SECRET), "/": (200, "", SECRET)}) as s:
        yield s


def spellings(port: int) -> list[str]:
    return [f"http://127.0.0.1:{port}/secret", f"http://localhost:{port}/secret", f"http://2130706433:{port}/secret",
            f"http://0x7f.1:{port}/secret", f"http://127.1:{port}/secret", f"http://[::ffff:127.0.0.1]:{port}/secret",
            f"https://127.0.0.1:{port}/secret", f"http://127.0.0.1:{port}/", f"//127.0.0.1:{port}/secret"]


@pytest.fixture
def outer(inner):
    targets = spellings(inner.port)
    routes = {f"/r{i}": (302, target, "") for i, target in enumerate(targets)}
    routes["/hop"] = (301, "/hop2", "")  # a same-site hop first, then out
    routes["/hop2"] = (307, targets[0], "")
    routes["/loop"] = (302, "/loop", "")
    links = "".join(f'<a href="{p}">link {p}</a> ' for p in [*routes, "/ok"])
    routes["/"] = (200, "", f"<html><head><title>Home</title></head><body><p>welcome {links}</p></body></html>")
    routes["/ok"] = (200, "", "<html><head><title>Lighthouses</title></head><body><p>lamp keepers</p></body></html>")
    with Server(routes) as s:
        yield s


async def test_redirects_and_links_to_private_addresses_are_refused(outer, inner):
    index = LocalIndexProvider(outer.url("/"))
    assert (await index.search("lamp keepers"))[0].url == outer.url("/ok")  # the site itself is crawled
    assert await index.search("zebracorn") == []
    assert inner.connections == [], "the private server was contacted"
    refused = "\n".join(index.failures)
    assert "blocked for safety" in refused and "loopback" in refused, refused
    assert len(index.failures) >= 10 and "redirected to" in refused, refused
    assert "/loop: more than 10 redirects" in refused, refused


async def test_an_explicitly_allowed_private_site_is_reached(outer, inner):
    index = LocalIndexProvider(outer.url("/"), allow=[f"127.0.0.1:{inner.port}"])
    assert (await index.search("zebracorn"))[0].url == inner.url("/secret")
    assert inner.connections  # reached, through the allow-list only
    # The IPv6 and name spellings are other hosts: still refused.
    assert any("localhost" in f for f in index.failures) and any("::ffff:127.0.0.1" in f for f in index.failures)


async def test_the_named_site_is_allowed_a_shared_guard_decides_alone(inner):
    from glm_agent.tools.browser.guard import URLGuard

    # Named as the source, a local site is allowed (its host and port, in that spelling).
    named = LocalIndexProvider(f"http://localhost:{inner.port}/secret", crawl=False)
    assert (await named.search("zebracorn"))[0].url.endswith("/secret")
    # With a guard of its own (e.g. the browser session's), that guard alone decides.
    guarded = LocalIndexProvider(inner.url("/secret"), guard=URLGuard())
    with pytest.raises(SearchError, match="blocked for safety: 127.0.0.1 is a loopback address"):
        await guarded.search("zebracorn")
    assert len(inner.connections) == 1  # only the named, allowed, fetch
