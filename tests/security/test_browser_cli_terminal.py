"""Terminal injection through `glm-agent browser`: a page's text, title and links (its
citation) carry escape sequences and bidi controls; `browser open`, `browser search` and
`browser run` show them visibly, never raw. The page is served on 127.0.0.1 and read by the
real Chromium and the real local search index.
"""

from __future__ import annotations

import html
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glm_agent.cli.browser import app
from glm_agent.tools.browser import BrowserError, find_chromium

sys.path.insert(0, str(Path(__file__).parent))
from hostile_terminal_tools import HOSTILE  # noqa: E402

# Raw sequences that must never reach the terminal (no styling is asked of CliRunner).
FORBIDDEN = ["\x1b", "\x07", "\x7f", "\x9b", "\x9c", "\x9d", "\u202e", "\u202c", "\roverwritten"]


def hostile_page() -> bytes:
    # Character references put raw controls into the DOM (a parser drops few of them).
    refs = "".join(f"&#{ord(c)};" for c in HOSTILE)
    return (f"<html><head><meta charset='utf-8'><title>Cited {refs} lighthouse</title></head><body>"
            f"<h1>Zanzibar lamp {refs}</h1><p>The zanzibar lamp keeper {refs} writes {html.escape(HOSTILE)}.</p>"
            f"<p><a href='/other'>link {refs}</a></p></body></html>").encode()


@pytest.fixture(scope="module")
def site():
    page = hostile_page()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def chromium():
    try:
        find_chromium()
    except BrowserError as exc:
        pytest.skip(str(exc))


@pytest.mark.parametrize("argv", [
    ["open", "http://{host}/"],
    ["search", "zanzibar lamp", "--index", "http://{host}/"],
    ["run", "--index", "http://{host}/", 'search("zanzibar lamp")', "mclick([0])", 'open_url("http://{host}/x")'],
])
def test_browser_cli_shows_page_controls_visibly(site, argv):
    argv = [a.format(host=site) for a in argv]
    if argv[0] in ("open", "run"):
        argv[1:1] = ["--allow", site]
    out = CliRunner().invoke(app, argv)
    assert out.exit_code == 0, out.output
    assert "anzibar" in out.output, out.output
    leaked = [seq for seq in FORBIDDEN if seq in out.output]
    assert not leaked, (leaked, out.output)
    assert "^[]0;pwned^G" in out.output or "<U+202E>" in out.output, out.output  # shown, not dropped
