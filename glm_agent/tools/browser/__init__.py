"""The browser tool: GLM-4 `simple_browser` (search, mclick, open_url, scroll, find) on a
system Chromium through Playwright, with pluggable search providers and a URL guard.

Importing this package does not import Playwright; the browser starts on first use.
"""

from .citations import Citations, render_citations
from .guard import URLGuard, Verdict
from .search import (
    BingProvider,
    DuckDuckGoProvider,
    LocalIndexProvider,
    SearchError,
    SearchProvider,
    SearchResult,
    SearxngProvider,
    make_provider,
    provider_from_env,
)
from .session import BrowserError, BrowserSession, ChromiumProcess, find_chromium
from .tool import BrowserTool

__all__ = [
    "BrowserTool",
    "render_citations",
    "Citations",
    "URLGuard",
    "Verdict",
    "SearchProvider",
    "SearchResult",
    "SearchError",
    "LocalIndexProvider",
    "SearxngProvider",
    "BingProvider",
    "DuckDuckGoProvider",
    "make_provider",
    "provider_from_env",
    "ChromiumProcess",
    "BrowserSession",
    "BrowserError",
    "find_chromium",
]
