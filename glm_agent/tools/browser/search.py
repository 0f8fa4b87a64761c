"""Search providers behind one interface: `await provider.search(query, recency_days)`.

- `LocalIndexProvider`: BM25 over a folder of HTML files or the pages of a local site
  (offline use, tests, the web eval suite).
- `SearxngProvider`: a SearXNG instance's JSON API (`/search?format=json`).
- `BingProvider`: Bing Web Search API v7 (what the GLM-4 demo used; retired for new keys).
- `DuckDuckGoProvider`: DuckDuckGo's HTML endpoint, no key needed.

The httpx-based ones take an injectable `transport` (tests use `httpx.MockTransport`).
Every failure raises `SearchError` with a message written for the model; the tool turns it
into an observation.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable
from urllib.parse import parse_qs, urldefrag, urlsplit

import httpx

from glm_agent.core.errors import GlmAgentError

from .extract import _iter_nodes, _text_of, _TreeBuilder, decode_html, extract
from .fetch import FetchRefused, GuardedFetcher
from .guard import URLGuard

__all__ = [
    "SearchResult",
    "SearchError",
    "SearchProvider",
    "LocalIndexProvider",
    "SearxngProvider",
    "BingProvider",
    "DuckDuckGoProvider",
    "make_provider",
    "provider_options",
    "provider_from_env",
    "PROVIDERS",
]

_UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"


@dataclass
class SearchResult:
    title: str
    url: str
    snippet: str = ""
    date: str | None = None


class SearchError(GlmAgentError, RuntimeError):
    """The provider failed; the message says what happened and what to try."""


@runtime_checkable
class SearchProvider(Protocol):
    name: str

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


def _parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    text = text.strip()
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            value = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# -- local index ---------------------------------------------------------------------

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af]+|\w+", re.U)


def tokenize(text: str) -> list[str]:
    """Words for latin scripts; character unigrams + bigrams for CJK (no segmenter needed)."""
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        word = match.group(0)
        if _CJK.match(word):
            tokens.extend(word)
            tokens.extend(word[i : i + 2] for i in range(len(word) - 1))
        else:
            tokens.append(word)
    return tokens


@dataclass
class _Doc:
    url: str
    title: str
    text: str
    date: datetime | None
    tf: Counter
    length: int


class LocalIndexProvider:
    """BM25 search over local HTML: a folder of files, or pages fetched from a (local) site.

    Args:
        source: a folder of .html files, a site URL to crawl, or a list of page URLs.
        base_url: for a folder served by a web server, the URL the folder is served at
            (results then point there instead of at `file://` paths).
        crawl: follow same-site links from the given URLs (up to `max_pages`).
        allow, allow_private: reachable non-public addresses, as for the browser (URLGuard).
            The sites of `source` (their host and port) are allowed: you named them. Every
            other host, redirect hops included, must be public or allowed.
        guard: a URLGuard to use instead (e.g. the browser session's).
        transport: httpx transport for fetching (tests).
    """

    name = "local"

    def __init__(
        self,
        source: str | Path | Sequence[str],
        *,
        base_url: str | None = None,
        crawl: bool = True,
        max_pages: int = 200,
        allow: Iterable[str] = (),
        allow_private: bool = False,
        guard: URLGuard | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 10.0,
    ):
        self.source = source
        self.allow = list(allow)
        self.allow_private = allow_private
        self.guard = guard
        self.base_url = base_url
        self.crawl = crawl
        self.max_pages = max_pages
        self.transport = transport
        self.timeout = timeout
        self.docs: list[_Doc] = []
        self.failures: list[str] = []  # pages the crawl could not fetch or was refused, and why
        self._df: Counter = Counter()
        self._avg_len = 1.0
        self._built = False
        self._lock = asyncio.Lock()

    @property
    def folder(self) -> Path | None:
        if isinstance(self.source, (str, Path)) and not str(self.source).startswith(("http://", "https://")):
            return Path(self.source)
        return None

    def add_document(self, url: str, html: str, date: datetime | None = None) -> None:
        page = extract(html, url)
        date = _parse_date(page.date) or date
        tokens = tokenize(page.title) * 3 + tokenize(page.text)  # title words count triple
        doc = _Doc(url, page.title or url, page.text, date, Counter(tokens), len(tokens))
        self.docs.append(doc)
        self._df.update(doc.tf.keys())
        self._avg_len = sum(d.length for d in self.docs) / len(self.docs)

    async def build(self) -> None:
        async with self._lock:
            if self._built:
                return
            folder = self.folder
            if folder is not None:
                await asyncio.to_thread(self._index_folder, folder)
            else:
                urls = [self.source] if isinstance(self.source, str) else list(self.source)
                await self._index_urls(urls)
            self._built = True

    def _index_folder(self, folder: Path) -> None:
        if not folder.is_dir():
            raise SearchError(f"the local search index folder {str(folder)!r} does not exist.")
        root = folder.resolve()
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in (".html", ".htm") or not path.is_file():
                continue
            real = path.resolve()
            if root not in real.parents:  # a symlink out of the folder: never read it
                continue
            if self.base_url:
                url = self.base_url.rstrip("/") + "/" + path.relative_to(folder).as_posix()
            else:
                url = real.as_uri()
            mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            self.add_document(url, decode_html(path.read_bytes()), mtime)
            if len(self.docs) >= self.max_pages:
                break

    async def _index_urls(self, urls: list[str]) -> None:
        seen: set[str] = set()
        level = list(dict.fromkeys(urldefrag(u)[0] for u in urls))
        origins = {urlsplit(u)[:2] for u in level}
        failures: list[str] = []
        guard = self.guard or URLGuard([*self.allow, *(f"{scheme}://{netloc}/" for scheme, netloc in origins)],
                                       allow_private=self.allow_private)
        async with GuardedFetcher(guard, transport=self.transport, timeout=self.timeout,
                                  headers={"User-Agent": _UA}) as fetcher:
            gate = asyncio.Semaphore(8)

            async def fetch(url: str) -> tuple[str, str, datetime | None] | None:
                async with gate:
                    try:
                        resp = await fetcher.get(url)
                    except (httpx.HTTPError, FetchRefused) as exc:
                        failures.append(str(exc) if isinstance(exc, FetchRefused) else f"{url}: {exc}")
                        return None
                ctype = resp.headers.get("content-type", "")
                if resp.status != 200 or (ctype and "html" not in ctype):
                    return None
                return resp.url, decode_html(resp.content, ctype), _parse_date(resp.headers.get("last-modified"))

            while level and len(self.docs) < self.max_pages:  # breadth first, a level at a time
                level = [u for u in level if u not in seen][: self.max_pages - len(self.docs)]
                seen.update(level)
                next_level: list[str] = []
                for page in await asyncio.gather(*(fetch(u) for u in level)):
                    if page is None:
                        continue
                    final, html, date = page
                    self.add_document(final, html, date)
                    if self.crawl:
                        for link in extract(html, final).links:
                            target = urldefrag(link.url)[0]
                            if urlsplit(target)[:2] in origins and target not in seen:
                                next_level.append(target)
                level = list(dict.fromkeys(next_level))
        self.failures = failures
        if not self.docs and failures:
            raise SearchError(f"could not fetch the local index site: {failures[0]}")

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[SearchResult]:
        await self.build()
        terms = list(dict.fromkeys(tokenize(query)))
        if not terms:
            raise SearchError("the search query has no words in it; write what you are looking for.")
        cutoff = datetime.now(timezone.utc) - timedelta(days=recency_days) if recency_days else None
        n = len(self.docs)
        scored: list[tuple[float, _Doc]] = []
        for doc in self.docs:
            if cutoff and doc.date and doc.date < cutoff:
                continue
            score = 0.0
            for term in terms:
                tf = doc.tf.get(term, 0)
                if not tf:
                    continue
                idf = math.log(1 + (n - self._df[term] + 0.5) / (self._df[term] + 0.5))
                score += idf * tf * 2.5 / (tf + 1.5 * (0.25 + 0.75 * doc.length / self._avg_len))
            if score > 0:
                scored.append((score, doc))
        scored.sort(key=lambda pair: -pair[0])
        return [
            SearchResult(d.title, d.url, _snippet(d.text, terms), d.date.date().isoformat() if d.date else None)
            for _, d in scored[:count]
        ]

    async def aclose(self) -> None:
        pass


_LINK_MARK = re.compile(r"【\d+†([^】]*)】")


def _snippet(text: str, terms: list[str], width: int = 220) -> str:
    """The passage with the most query terms in it."""
    plain = _LINK_MARK.sub(r"\1", text).replace("**", "").replace("`", "")
    lines = [ln.strip(" #-*|>") for ln in plain.splitlines() if ln.strip(" #-*|>")]
    if not lines:
        return ""
    best = max(range(len(lines)), key=lambda i: (sum(t in lines[i].lower() for t in terms), -i))
    out = lines[best]
    j = best + 1
    while len(out) < width and j < len(lines):
        out += " " + lines[j]
        j += 1
    return out[:width].rstrip() + ("…" if len(out) > width else "")


# -- remote providers ----------------------------------------------------------------


class _HttpProvider:
    name = "http"

    def __init__(self, *, transport: httpx.AsyncBaseTransport | None = None, timeout: float = 15.0):
        self._client = httpx.AsyncClient(
            transport=transport, timeout=timeout, follow_redirects=True, headers={"User-Agent": _UA}
        )

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise SearchError(f"the {self.name} search service did not answer in time; try again.") from None
        except httpx.HTTPError as exc:
            raise SearchError(f"the {self.name} search service could not be reached ({exc}).") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class SearxngProvider(_HttpProvider):
    """A SearXNG instance; its settings.yml must list `json` under `search.formats`."""

    name = "searxng"

    def __init__(self, base_url: str, *, language: str | None = None, engines: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")
        self.language = language
        self.engines = engines

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[SearchResult]:
        params: dict[str, Any] = {"q": query, "format": "json", "pageno": 1}
        if recency_days:
            params["time_range"] = "day" if recency_days <= 1 else "week" if recency_days <= 7 else "month" if recency_days <= 31 else "year"
        if self.language:
            params["language"] = self.language
        if self.engines:
            params["engines"] = self.engines
        resp = await self._request("GET", self.base_url + "/search", params=params)
        if resp.status_code == 403:
            raise SearchError(
                "the SearXNG instance refused JSON output (HTTP 403); its settings.yml must enable the json format."
            )
        if resp.status_code == 429:
            raise SearchError("the SearXNG instance is rate limiting (HTTP 429); wait and try again.")
        if resp.status_code != 200:
            raise SearchError(f"the SearXNG instance answered HTTP {resp.status_code}.")
        try:
            data = resp.json()
        except ValueError:
            raise SearchError("the SearXNG instance did not return JSON; check its URL.") from None
        results = [
            SearchResult(r.get("title") or r.get("url", ""), r["url"], r.get("content") or "", r.get("publishedDate"))
            for r in data.get("results", [])
            if r.get("url")
        ]
        if not results and data.get("unresponsive_engines"):
            broken = ", ".join(f"{e[0]} ({e[1]})" for e in data["unresponsive_engines"] if len(e) >= 2)
            raise SearchError(f"no results: the search engines behind SearXNG failed: {broken}.")
        return results[:count]


class BingProvider(_HttpProvider):
    """Bing Web Search API v7 (`Ocp-Apim-Subscription-Key`; key from `BING_SEARCH_KEY`)."""

    name = "bing"

    def __init__(
        self,
        api_key: str | None = None,
        *,
        endpoint: str = "https://api.bing.microsoft.com/v7.0/search",
        market: str | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.api_key = api_key or os.environ.get("BING_SEARCH_KEY") or os.environ.get("BING_API_KEY")
        self.endpoint = endpoint
        self.market = market

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[SearchResult]:
        if not self.api_key:
            raise SearchError("Bing search is not configured (no API key; set BING_SEARCH_KEY).")
        params: dict[str, Any] = {"q": query, "count": count, "textDecorations": False, "textFormat": "Raw"}
        if recency_days:
            if recency_days <= 1:
                params["freshness"] = "Day"
            elif recency_days <= 7:
                params["freshness"] = "Week"
            elif recency_days <= 31:
                params["freshness"] = "Month"
            else:
                today = datetime.now(timezone.utc).date()
                params["freshness"] = f"{today - timedelta(days=recency_days)}..{today}"
        if self.market:
            params["mkt"] = self.market
        resp = await self._request(
            "GET", self.endpoint, params=params, headers={"Ocp-Apim-Subscription-Key": self.api_key}
        )
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if resp.status_code != 200 or data.get("_type") == "ErrorResponse":
            raise SearchError(f"Bing search failed (HTTP {resp.status_code}): {_bing_error(data)}")
        pages = (data.get("webPages") or {}).get("value") or []  # no webPages = no results
        return [
            SearchResult(p.get("name", ""), p["url"], p.get("snippet", ""), p.get("datePublished") or p.get("dateLastCrawled"))
            for p in pages
            if p.get("url")
        ][:count]


def _bing_error(data: dict) -> str:
    if isinstance(data.get("error"), dict):  # gateway errors (bad key, quota)
        return f"{data['error'].get('code', '')}: {data['error'].get('message', '')}".strip(": ")
    errors = data.get("errors") or []
    if errors:
        return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
    return "no details"


class DuckDuckGoProvider(_HttpProvider):
    """DuckDuckGo's no-JavaScript HTML results page (no key; may rate-limit bots)."""

    name = "duckduckgo"

    def __init__(self, *, endpoint: str = "https://html.duckduckgo.com/html/", region: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.endpoint = endpoint
        self.region = region

    async def search(self, query: str, recency_days: int | None = None, count: int = 10) -> list[SearchResult]:
        form: dict[str, str] = {"q": query, "b": ""}
        if recency_days:
            form["df"] = "d" if recency_days <= 1 else "w" if recency_days <= 7 else "m" if recency_days <= 31 else "y"
        if self.region:
            form["kl"] = self.region
        resp = await self._request("POST", self.endpoint, data=form)
        if resp.status_code != 200 or "anomaly-modal" in resp.text:
            raise SearchError(
                f"DuckDuckGo refused the query (HTTP {resp.status_code}, bot check or rate limit); "
                "try again later or configure another search provider."
            )
        return parse_duckduckgo_html(resp.text)[:count]


def parse_duckduckgo_html(html: str) -> list[SearchResult]:
    """Results from DuckDuckGo's HTML page: `a.result__a` titles, `.result__snippet` texts,
    links wrapped as `//duckduckgo.com/l/?uddg=<target>`; ads (`.result--ad`) skipped."""
    builder = _TreeBuilder()
    builder.feed(html)

    def classes(node: Any) -> list[str]:
        return node.attrs.get("class", "").split()

    clean = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
    results: list[SearchResult] = []
    seen: set[str] = set()
    for anchor in _iter_nodes(builder.root):
        if "result__a" not in classes(anchor):
            continue
        # The result's box: the nearest ancestor marked as a result (or holding a snippet).
        box, node, is_ad = None, anchor.parent, False
        for _ in range(6):
            if node is None:
                break
            is_ad = is_ad or "result--ad" in classes(node)
            if box is None and ({"result", "result__body"} & set(classes(node))):
                box = node
            node = node.parent
        if is_ad:
            continue
        href = anchor.attrs.get("href", "")
        if "uddg=" in href:  # redirect wrapper: the target is in `uddg`
            href = parse_qs(urlsplit(href).query).get("uddg", [href])[0]
        if href.startswith("//"):
            href = "https:" + href
        if not href.startswith(("http://", "https://")) or "duckduckgo.com/y.js" in href or href in seen:
            continue
        seen.add(href)
        snippet = None
        if box is not None:
            snippet = next((n for n in _iter_nodes(box) if "result__snippet" in classes(n)), None)
        results.append(SearchResult(clean(_text_of(anchor)), href, clean(_text_of(snippet)) if snippet else ""))
    return results


# -- configuration -------------------------------------------------------------------

PROVIDERS = {
    "local": LocalIndexProvider,
    "searxng": SearxngProvider,
    "bing": BingProvider,
    "duckduckgo": DuckDuckGoProvider,
}


def make_provider(name: str, **options: Any) -> SearchProvider:
    """`make_provider("searxng", base_url=...)`, `make_provider("local", source="./pages")` ..."""
    key = name.lower().replace("ddg", "duckduckgo")
    if key not in PROVIDERS:
        raise ValueError(f"unknown search provider {name!r}; choose one of: {', '.join(PROVIDERS)}")
    return PROVIDERS[key](**options)


def provider_options(
    search: str | None, index: str | None = None, searxng_url: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """`(name, options)` for `BrowserTool(search=name, search_options=options)` from a provider
    name, a local index (a folder or site URL) and a SearXNG URL, as a user gives them.

    An index alone means the local provider, a SearXNG URL alone SearXNG; no name at all leaves
    the choice to `provider_from_env`. Raises ValueError when a needed part is missing.
    """
    if index and not search:
        search = "local"
    if searxng_url and not search:
        search = "searxng"
    if search is None:
        return None, {}
    key = search.lower().replace("ddg", "duckduckgo")
    if key not in PROVIDERS:
        raise ValueError(f"unknown search provider {search!r}; choose one of: {', '.join(PROVIDERS)}")
    options: dict[str, Any] = {}
    if key == "local":
        if not index:
            raise ValueError("the local search provider needs an index: a folder of .html pages or a site URL")
        options["source"] = index
    elif key == "searxng":
        if not searxng_url:
            raise ValueError("the searxng search provider needs the instance's base URL")
        options["base_url"] = searxng_url
    return key, options


def provider_from_env(env: dict[str, str] | None = None) -> SearchProvider:
    """The provider named by `GLM_AGENT_SEARCH` (local | searxng | bing | duckduckgo).

    Options come from `GLM_AGENT_SEARCH_INDEX` (local: a folder or site URL),
    `GLM_AGENT_SEARXNG_URL` and `BING_SEARCH_KEY`. With `GLM_AGENT_SEARCH` unset: SearXNG if
    its URL is set, else Bing if a key is set, else a local index if one is named, else
    DuckDuckGo (needs no key).
    """
    env = dict(os.environ if env is None else env)
    name = env.get("GLM_AGENT_SEARCH", "").strip().lower()
    if not name:
        if env.get("GLM_AGENT_SEARXNG_URL"):
            name = "searxng"
        elif env.get("BING_SEARCH_KEY") or env.get("BING_API_KEY"):
            name = "bing"
        elif env.get("GLM_AGENT_SEARCH_INDEX"):
            name = "local"
        else:
            name = "duckduckgo"
    if name == "local":
        source = env.get("GLM_AGENT_SEARCH_INDEX")
        if not source:
            raise ValueError("GLM_AGENT_SEARCH=local needs GLM_AGENT_SEARCH_INDEX (a folder of pages or a site URL)")
        return LocalIndexProvider(source)
    if name == "searxng":
        url = env.get("GLM_AGENT_SEARXNG_URL")
        if not url:
            raise ValueError("GLM_AGENT_SEARCH=searxng needs GLM_AGENT_SEARXNG_URL (the instance's base URL)")
        return SearxngProvider(url)
    if name == "bing":
        return BingProvider(env.get("BING_SEARCH_KEY") or env.get("BING_API_KEY"))
    return make_provider(name)

