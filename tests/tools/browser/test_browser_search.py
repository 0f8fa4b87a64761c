"""Search providers: the local BM25 index (folder and live local site) and the JSON/HTML
providers against httpx.MockTransport answers of their real shapes, errors included."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from browser_site import PAGES

from glm_agent.tools.browser import (
    BingProvider,
    BrowserTool,
    DuckDuckGoProvider,
    LocalIndexProvider,
    SearchError,
    SearxngProvider,
    make_provider,
    provider_from_env,
)


def _dated(title: str, body: str, days_ago: int) -> str:
    date = (datetime.now(timezone.utc) - timedelta(days=days_ago)).date().isoformat()
    return f'<html><head><meta charset="utf-8"><title>{title}</title><meta name="date" content="{date}"></head><body><p>{body}</p></body></html>'


@pytest.fixture
def folder(tmp_path):
    for path, html in PAGES.items():
        if path != "/":
            (tmp_path / path.strip("/")).write_text(html, encoding="utf-8")
    (tmp_path / "gbk.html").write_bytes(
        '<html><head><meta charset="gbk"><title>故宫博物院</title></head><body><p>故宫位于北京。</p></body></html>'.encode("gbk")
    )
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "fresh.html").write_text(_dated("Fresh compiler news", "A new compiler release.", 2))
    (tmp_path / "news" / "stale.html").write_text(_dated("Stale compiler news", "An old compiler release.", 100))
    (tmp_path / "notes.txt").write_text("not html, not indexed: compiler")
    return tmp_path


async def test_local_index_over_a_folder(folder):
    index = LocalIndexProvider(folder)
    results = await index.search("rust memory safety")
    assert results[0].title == "Rust guide"
    assert results[0].url == (folder / "rust.html").resolve().as_uri()
    assert "memory safety" in results[0].snippet
    assert (await index.search("长城 防御"))[0].title == "长城简介"
    assert (await index.search("故宫"))[0].title == "故宫博物院"  # GBK decoded from its <meta>
    titles = [r.title for r in await index.search("compiler news")]
    assert titles[:2] == ["Fresh compiler news", "Stale compiler news"]
    assert [r.title for r in await index.search("compiler news", recency_days=30)] == ["Fresh compiler news"]
    assert await index.search("zyzzyva") == []
    with pytest.raises(SearchError, match="no words"):
        await index.search("?!")


async def test_local_index_with_base_url_and_missing_folder(folder, tmp_path):
    index = LocalIndexProvider(folder, base_url="http://docs.test/")
    assert (await index.search("rust"))[0].url == "http://docs.test/rust.html"
    with pytest.raises(SearchError, match="does not exist"):
        await LocalIndexProvider(tmp_path / "nope").search("x")


async def test_local_index_crawls_a_live_local_site(site):
    index = LocalIndexProvider(site.url("/"))  # fetched over httpx from the test server
    results = await index.search("programming language released")
    assert {r.url for r in results[:3]} == {site.url(p) for p in ("/python.html", "/rust.html", "/go.html")}
    assert (await index.search("故宫 皇家"))[0].url == site.url("/gbk.html")
    assert (await index.search("zanzibar lamp"))[0].url == site.url("/lighthouses.html")
    assert all(r.date for r in results)  # from <meta name="date">


SEARXNG_OK = {
    "query": "glm-4",
    "number_of_results": 0,
    "results": [
        {
            "url": "https://github.com/THUDM/GLM-4",
            "title": "THUDM/GLM-4: GLM-4 series: Open Multilingual Multimodal Chat LMs",
            "content": "GLM-4-9B is the open-source version of the latest generation of pre-trained models.",
            "engine": "duckduckgo",
            "parsed_url": ["https", "github.com", "/THUDM/GLM-4", "", "", ""],
            "template": "default.html",
            "engines": ["duckduckgo", "bing"],
            "positions": [1, 2],
            "publishedDate": None,
            "score": 3.0,
            "category": "general",
        },
        {"url": "https://huggingface.co/THUDM/glm-4-9b-chat", "title": "THUDM/glm-4-9b-chat", "content": "",
         "engine": "bing", "publishedDate": "2024-06-05T00:00:00", "score": 1.0, "category": "general"},
    ],
    "answers": [],
    "corrections": [],
    "infoboxes": [],
    "suggestions": ["glm-4 api"],
    "unresponsive_engines": [],
}


async def test_searxng_request_and_results():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=SEARXNG_OK)

    provider = SearxngProvider("http://searx.test/", transport=httpx.MockTransport(handler))
    results = await provider.search("glm-4", recency_days=7)
    assert seen[0].url.path == "/search"
    assert dict(seen[0].url.params) == {"q": "glm-4", "format": "json", "pageno": "1", "time_range": "week"}
    assert [r.url for r in results] == ["https://github.com/THUDM/GLM-4", "https://huggingface.co/THUDM/glm-4-9b-chat"]
    assert results[0].snippet.startswith("GLM-4-9B is")
    assert results[1].date == "2024-06-05T00:00:00"
    await provider.aclose()


@pytest.mark.parametrize(
    "response, words",
    [
        (httpx.Response(403, text="Forbidden"), "json format"),
        (httpx.Response(429, text="Too Many Requests"), "rate limiting"),
        (httpx.Response(500, text="Internal Server Error"), "HTTP 500"),
        (httpx.Response(200, text="<html>not json</html>"), "did not return JSON"),
        (httpx.Response(200, json={**SEARXNG_OK, "results": [], "unresponsive_engines": [["google", "timeout"]]}), r"google \(timeout\)"),
    ],
)
async def test_searxng_errors(response, words):
    provider = SearxngProvider("http://searx.test", transport=httpx.MockTransport(lambda r: response))
    with pytest.raises(SearchError, match=words):
        await provider.search("x")


BING_OK = {
    "_type": "SearchResponse",
    "queryContext": {"originalQuery": "glm-4"},
    "webPages": {
        "webSearchUrl": "https://www.bing.com/search?q=glm-4",
        "totalEstimatedMatches": 2,
        "value": [
            {
                "id": "https://api.bing.microsoft.com/api/v7/#WebPages.0",
                "name": "GLM-4 - Zhipu AI",
                "url": "https://zhipuai.cn/glm-4",
                "isFamilyFriendly": True,
                "displayUrl": "https://zhipuai.cn/glm-4",
                "snippet": "GLM-4 is the new generation base model.",
                "dateLastCrawled": "2024-07-01T10:00:00.0000000Z",
                "language": "en",
                "isNavigational": False,
            },
        ],
    },
    "rankingResponse": {"mainline": {"items": [{"answerType": "WebPages", "resultIndex": 0, "value": {"id": "https://api.bing.microsoft.com/api/v7/#WebPages.0"}}]}},
}


async def test_bing_request_results_and_no_results():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.params["q"] == "nothing":
            return httpx.Response(200, json={"_type": "SearchResponse", "queryContext": {"originalQuery": "nothing"}})
        return httpx.Response(200, json=BING_OK)

    provider = BingProvider("KEY", transport=httpx.MockTransport(handler))
    (result,) = await provider.search("glm-4", recency_days=7)
    assert seen[0].headers["Ocp-Apim-Subscription-Key"] == "KEY"
    assert seen[0].url.params["freshness"] == "Week"
    assert (result.title, result.url, result.date) == ("GLM-4 - Zhipu AI", "https://zhipuai.cn/glm-4", "2024-07-01T10:00:00.0000000Z")
    assert await provider.search("nothing") == []  # no `webPages`: the GLM-4 demo crashed here


@pytest.mark.parametrize(
    "response, words",
    [
        (httpx.Response(401, json={"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}), "Access denied"),
        (httpx.Response(400, json={"_type": "ErrorResponse", "errors": [{"code": "InvalidRequest", "subCode": "ParameterMissing", "message": "Required parameter is missing.", "parameter": "q"}]}), "InvalidRequest: Required parameter is missing"),
        (httpx.Response(429, json={"error": {"code": "429", "message": "Rate limit is exceeded."}}), "HTTP 429"),
    ],
)
async def test_bing_errors(response, words):
    provider = BingProvider("KEY", transport=httpx.MockTransport(lambda r: response))
    with pytest.raises(SearchError, match=words):
        await provider.search("glm-4")


async def test_bing_needs_a_key(monkeypatch):
    monkeypatch.delenv("BING_SEARCH_KEY", raising=False)
    monkeypatch.delenv("BING_API_KEY", raising=False)
    with pytest.raises(SearchError, match="no API key"):
        await BingProvider().search("x")


DDG_HTML = """<!DOCTYPE html><html><head><title>glm-4 at DuckDuckGo</title></head><body>
<div class="serp__results"><div id="links" class="results">
<div class="result results_links results_links_deep result--ad">
  <div class="links_main links_deep result__body"><h2 class="result__title">
  <a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_domain=ads.example&amp;u3=x">Buy GPUs now</a></h2>
  <a class="result__snippet" href="https://duckduckgo.com/y.js?u3=x">Ad text</a></div></div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fgithub.com%2FTHUDM%2FGLM%2D4&amp;rut=abc123">THUDM/<b>GLM-4</b>: GLM-4 series</a></h2>
    <div class="result__extras"><div class="result__extras__url"><a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fgithub.com%2FTHUDM%2FGLM%2D4&amp;rut=abc123">github.com/THUDM/GLM-4</a></div></div>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fgithub.com%2FTHUDM%2FGLM%2D4&amp;rut=abc123"><b>GLM-4</b>-9B is the open-source version of the latest generation.</a>
    <div class="clear"></div></div></div>
<div class="result results_links results_links_deep web-result ">
  <div class="links_main links_deep result__body">
    <h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fhuggingface.co%2FTHUDM%2Fglm-4-9b-chat&amp;rut=def">THUDM/glm-4-9b-chat · Hugging Face</a></h2>
    <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x">Model card for <b>GLM-4</b>-9B-Chat.</a></div></div>
</div></div></body></html>"""


async def test_duckduckgo_html_results():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text=DDG_HTML, headers={"content-type": "text/html; charset=UTF-8"})

    provider = DuckDuckGoProvider(transport=httpx.MockTransport(handler))
    results = await provider.search("glm-4", recency_days=1)
    assert seen[0].method == "POST" and b"q=glm-4" in seen[0].content and b"df=d" in seen[0].content
    assert [(r.title, r.url) for r in results] == [
        ("THUDM/GLM-4: GLM-4 series", "https://github.com/THUDM/GLM-4"),
        ("THUDM/glm-4-9b-chat · Hugging Face", "https://huggingface.co/THUDM/glm-4-9b-chat"),
    ]
    assert results[0].snippet == "GLM-4-9B is the open-source version of the latest generation."


async def test_duckduckgo_bot_check_and_network_errors():
    anomaly = '<html><body><div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div></body></html>'
    provider = DuckDuckGoProvider(transport=httpx.MockTransport(lambda r: httpx.Response(202, text=anomaly)))
    with pytest.raises(SearchError, match="bot check or rate limit"):
        await provider.search("x")

    def refuse(request):
        raise httpx.ConnectError("connection refused", request=request)

    provider = DuckDuckGoProvider(transport=httpx.MockTransport(refuse))
    with pytest.raises(SearchError, match="could not be reached"):
        await provider.search("x")


async def test_provider_error_is_an_observation_not_a_crash():
    provider = SearxngProvider("http://searx.test", transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    tool = BrowserTool(provider)
    result = await tool.run('search("anything")')
    assert result.is_error and "SearXNG instance answered HTTP 500" in result.content
    assert not tool.session.started  # searching never needed the browser
    await tool.aclose()


async def test_search_result_format_and_citations(folder):
    tool = BrowserTool(LocalIndexProvider(folder))
    result = await tool.run('search("programming language")')
    assert result.metadata == "browser_result" and not result.is_error
    lines = result.content.splitlines()
    assert lines[0].startswith("# 【0†") and lines[0].endswith("†local file】")
    cites = result.data["citations"]
    assert set(cites) == {str(i) for i in range(len(cites))} and len(cites) >= 3
    again = await tool.run('search("rust")')
    assert min(int(k) for k in again.data["citations"]) == len(cites)  # one id namespace per session
    empty = await tool.run('search("zyzzyva")')
    assert not empty.is_error and "No results" in empty.content
    await tool.aclose()


async def test_make_provider_and_env(tmp_path):
    ddg = make_provider("ddg")
    assert isinstance(ddg, DuckDuckGoProvider)
    await ddg.aclose()
    assert isinstance(make_provider("local", source=str(tmp_path)), LocalIndexProvider)
    with pytest.raises(ValueError, match="unknown search provider"):
        make_provider("altavista")
    for env, kind in [({"GLM_AGENT_SEARXNG_URL": "http://s.test"}, SearxngProvider), ({"BING_SEARCH_KEY": "k"}, BingProvider)]:
        provider = provider_from_env(env)
        assert isinstance(provider, kind)
        await provider.aclose()
    assert isinstance(provider_from_env({"GLM_AGENT_SEARCH": "local", "GLM_AGENT_SEARCH_INDEX": str(tmp_path)}), LocalIndexProvider)
    default = provider_from_env({})
    assert isinstance(default, DuckDuckGoProvider)
    await default.aclose()
    with pytest.raises(ValueError, match="GLM_AGENT_SEARXNG_URL"):
        provider_from_env({"GLM_AGENT_SEARCH": "searxng"})




async def test_missing_chromium_is_an_observation(folder):
    tool = BrowserTool(LocalIndexProvider(folder), executable_path="/nonexistent/chromium")
    result = await tool.run('mclick([0])')
    assert result.is_error and "there is no id 0" in result.content
    await tool.run('search("rust")')
    result = await tool.run("mclick([0])")
    assert result.is_error and "none of the pages could be opened" in result.content
    assert "the configured Chromium '/nonexistent/chromium' does not exist" in result.content
    opened = await tool.run(f'open_url("{(folder / "rust.html").as_uri()}")')
    assert opened.is_error and "does not exist" in opened.content
    await tool.aclose()
