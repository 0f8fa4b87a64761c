"""The browser tool on a real Chromium against the local test website (one launch per module)."""

from __future__ import annotations

import re

import pytest
import pytest_asyncio
from browser_site import fake_resolver

from glm_agent.tools.browser import BrowserTool, LocalIndexProvider

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def index(site):
    return LocalIndexProvider(site.url("/"))  # crawled once, on the first search


@pytest_asyncio.fixture(loop_scope="module")
async def make_tool(site, chromium, index):
    tools = []

    def make(**kwargs):
        kwargs.setdefault("allow", [site.host])
        kwargs.setdefault("nav_timeout", 5)
        tool = BrowserTool(index, browser=chromium, **kwargs)
        tools.append(tool)
        return tool

    yield make
    for tool in tools:
        await tool.aclose()


async def test_search_then_mclick_three_in_parallel(make_tool, site):
    tool = make_tool()
    found = await tool.run('search("slow page served slowly")')
    ids = [int(k) for k, v in found.data["citations"].items() if "/slow/" in v["url"]]
    assert len(ids) == 3, found.content
    site.max_in_flight = 0
    quotes = await tool.run(f"mclick({ids})")
    assert quotes.metadata == "quote_result" and not quotes.is_error
    assert site.max_in_flight >= 2, "the three pages were not loaded in parallel"
    qids = quotes.data["quote_ids"]
    assert len(qids) == 3 and not set(qids) & set(int(k) for k in found.data["citations"])  # no id collisions
    for qid in qids:
        assert f"【{qid}†Slow page " in quotes.content
    assert [quotes.data["citations"][str(q)]["url"] for q in qids] == [
        found.data["citations"][str(i)]["url"] for i in ids
    ]  # quote ids follow the order asked for
    assert "Served slowly." in quotes.content
    assert "cookies" not in quotes.content and "Copyright" not in quotes.content  # main text only


async def test_mclick_concurrency_is_bounded(make_tool, site):
    tool = make_tool(max_tabs=1)
    found = await tool.run('search("slow page")')
    ids = [int(k) for k, v in found.data["citations"].items() if "/slow/" in v["url"]]
    site.max_in_flight = 0
    result = await tool.run(f"mclick({ids})")
    assert not result.is_error and site.max_in_flight == 1


async def test_open_url_page_text_links_and_open_by_id(make_tool, site):
    tool = make_tool()
    result = await tool.run(f'open_url("{site.url("/python.html")}")')
    assert result.metadata == "browser_result" and not result.is_error
    text = result.content
    assert text.startswith(f"TITLE: Python guide\nURL: {site.url('/python.html')}")
    assert "| Python 3.0 | 2008 |" in text and "**Guido van Rossum**" in text
    assert "cookies" not in text and "Copyright" not in text and "tracking" not in text
    rust_id = int(re.search(r"【(\d+)†Rust guide】", text).group(1))
    assert result.data["citations"][str(rust_id)]["url"] == site.url("/rust.html")
    opened = await tool.run(f"open_url({rust_id})")
    assert "TITLE: Rust guide" in opened.content and "- Ownership" in opened.content
    # JSON-dialect arguments reach the same actions.
    again = await tool.call({"action": "open_url", "url": site.url("/go.html")})
    assert "Go 1.0 was released in March 2012" in again.content


async def test_long_page_scroll_and_find(make_tool, site):
    tool = make_tool(page_chars=3000)
    first = await tool.run(f'open_url("{site.url("/lighthouses.html")}")')
    parts = int(re.search(r"\[part 1 of (\d+)\]", first.content).group(1))
    assert parts >= 5 and "Visible: 0% - " in first.content and "scroll()" in first.content
    assert "zanzibar" not in first.content
    second = await tool.run("scroll()")
    assert "[part 2 of" in second.content
    found = await tool.run('find("ZANZIBAR lamp")')
    assert found.data["matches"] == 1
    where = int(re.search(r"\[part (\d+)\]", found.content).group(1))
    shown = await tool.run(f"scroll({where})")
    assert "zanzibar lamp" in shown.content and f"[part {where} of {parts}]" in shown.content
    last = await tool.run(f"scroll({parts})")
    assert "Section 60" in last.content and "More below" not in last.content
    past = await tool.run(f"scroll({parts + 1})")
    assert past.is_error and f"this page has {parts} parts" in past.content
    missing = await tool.run('find("unicorn")')
    assert not missing.is_error and "No match" in missing.content


async def test_chinese_gbk_and_script_rendered_pages(make_tool, site):
    tool = make_tool()
    zh = await tool.run(f'open_url("{site.url("/zh.html")}")')
    assert "TITLE: 长城简介" in zh.content and "东起山海关，西至嘉峪关" in zh.content
    gbk = await tool.run(f'open_url("{site.url("/gbk.html")}")')  # GBK, charset only in <meta>
    assert "TITLE: 故宫博物院" in gbk.content and "明清两代的皇家宫殿" in gbk.content
    js = await tool.run(f'open_url("{site.url("/js.html")}")')
    assert "This paragraph was written by JavaScript." in js.content and "Loading" not in js.content


async def test_failures_are_clear_observations(make_tool, site):
    tool = make_tool(nav_timeout=1.5)
    not_found = await tool.run(f'open_url("{site.url("/missing.html")}")')
    assert not_found.is_error and "HTTP 404 Not Found" in not_found.content and "No such page" in not_found.content

    slow = await tool.run(f'open_url("{site.url("/slow.html")}")')
    assert slow.is_error and "did not finish loading within 1.5 s (timeout)" in slow.content

    partial = await tool.run(f'open_url("{site.url("/partial.html")}")')
    assert not partial.is_error and "showing what had arrived" in partial.content
    assert "The first paragraph arrived" in partial.content

    download = await tool.run(f'open_url("{site.url("/report.csv")}")')
    assert download.is_error and "downloads are not followed" in download.content

    unknown = await tool.run("mclick([4242])")
    assert unknown.is_error and "there is no id 4242" in unknown.content

    malformed = await tool.run("mclick([1, 2")
    assert malformed.is_error and "could not parse browser action" in malformed.content

    nothing_open = await make_tool().run("scroll()")
    assert nothing_open.is_error and "no page is open" in nothing_open.content


async def test_private_addresses_are_blocked_before_any_request(make_tool, site):
    tool = make_tool()
    meta = await tool.run(f'open_url("{site.url("/redirect-metadata")}")')
    assert meta.is_error
    assert "redirected to http://169.254.169.254/latest/meta-data/" in meta.content
    assert "link-local" in meta.content and "blocked for safety" in meta.content

    site.other_hits.clear()
    internal = await tool.run(f'open_url("{site.url("/redirect-internal")}")')
    assert internal.is_error and "loopback" in internal.content
    direct = await tool.run(f'open_url("http://127.0.0.1:{site.other_port}/admin")')
    assert direct.is_error and "blocked for safety: 127.0.0.1 is a loopback address" in direct.content
    assert site.other_hits == []  # the server behind the redirect never saw a request

    private = await tool.run('open_url("http://10.0.0.1/")')
    assert private.is_error and "10.0.0.1 is a private network address" in private.content
    local_file = await tool.run('open_url("file:///etc/passwd")')
    assert local_file.is_error and "file:// URLs are blocked" in local_file.content

    ok = await tool.run(f'open_url("{site.url("/redirect-ok")}")')  # redirects within the allow-list work
    assert not ok.is_error and "TITLE: Rust guide" in ok.content

    # Without the allow-list entry even the test site itself is off limits.
    strict = make_tool(allow=[])
    refused = await strict.run(f'open_url("{site.url("/")}")')
    assert refused.is_error and "loopback" in refused.content


async def test_page_size_is_capped(make_tool, site):
    tool = make_tool(max_page_bytes=100_000)
    result = await tool.run(f'open_url("{site.url("/huge.html")}")')
    assert not result.is_error and "only its start was loaded" in result.content
    assert "Row 0 of the huge table" in result.full_output
    assert "Row 49999" not in result.full_output and len(result.full_output) < 100_000


async def test_dns_failures(make_tool, site):
    tool = make_tool(resolver=fake_resolver({}))
    direct = await tool.run('open_url("http://nowhere.invalid/page")')
    assert direct.is_error and "could not resolve host 'nowhere.invalid'" in direct.content
    hop = await tool.run(f'open_url("{site.url("/redirect-nowhere")}")')
    assert hop.is_error and "redirected to http://nowhere.invalid/" in hop.content
    assert "could not resolve host" in hop.content


async def test_mclick_with_some_failures_keeps_the_rest(make_tool, site):
    tool = make_tool(nav_timeout=1.5)
    page = await tool.run(f'open_url("{site.url("/python.html")}")')
    ids = {v["url"]: int(k) for k, v in page.data["citations"].items()}
    result = await tool.run(f"mclick([{ids[site.url('/rust.html')]}, {ids[site.url('/missing.html')]}, 9999])")
    assert not result.is_error and result.metadata == "quote_result"
    assert "Rust is a systems programming language" in result.content
    assert "HTTP 404" in result.content and "unknown id" in result.content
    assert len(result.data["quote_ids"]) == 1


async def test_a_crashed_browser_is_restarted(site, chromium):  # `chromium`: skip without one
    tool = BrowserTool(None, allow=[site.host])  # its own Chromium
    try:
        assert not (await tool.run(f'open_url("{site.url("/go.html")}")')).is_error
        await (await tool.session.process.browser()).close()  # as if Chromium died
        again = await tool.run(f'open_url("{site.url("/rust.html")}")')
        assert not again.is_error and "TITLE: Rust guide" in again.content
    finally:
        await tool.aclose()
    assert not tool.session.process.started
