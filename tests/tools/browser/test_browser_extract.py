"""HTML -> markdown-like text: structure kept, boilerplate dropped, links numbered."""

from __future__ import annotations

from browser_site import PAGES

from glm_agent.tools.browser.extract import decode_html, extract, sniff_charset


def test_article_structure_and_boilerplate():
    page = extract(PAGES["/python.html"], "http://docs.test/python.html")
    assert page.title == "Python guide"
    assert page.date == "2026-11-01"
    text = page.text
    assert "# The Python programming language" in text
    assert "**Guido van Rossum**" in text
    assert "| Version | Year |\n|---|---|\n| Python 2.0 | 2000 |" in text
    for junk in ("cookies", "Accept all", "Copyright", "About us", "tracking"):
        assert junk not in text
    # Links are numbered in order and resolved against the page URL.
    assert [(link.id, link.text, link.url) for link in page.links] == [
        (0, "Rust guide", "http://docs.test/rust.html"),
        (1, "old FAQ", "http://docs.test/missing.html"),
    ]
    assert "【0†Rust guide】" in text and "【1†old FAQ】" in text


def test_lists_nesting_code_quotes_and_hidden():
    html = """<body><h2>Steps</h2><ol><li>one<li>two<ul><li>nested <a href='#x'>anchor</a></li></ul></li></ol>
    <pre>def f():\n    return 1</pre><blockquote><p>quoted words</p></blockquote>
    <p hidden>secret</p><div style="display: none">also secret</div><div aria-hidden="true">x-secret</div>
    <p>a<br>b</p><img src=x.png alt="a chart"></body>"""
    text = extract(html, "http://h/").text
    assert "## Steps" in text
    assert "1. one\n2. two\n  - nested anchor" in text
    assert "```\ndef f():\n    return 1\n```" in text
    assert "> quoted words" in text
    assert "secret" not in text
    assert "a\nb" in text and "[image: a chart]" in text


def test_main_only_drops_link_dense_blocks_and_custom_numbering():
    html = """<body><div><h1>Outside</h1></div><main><h1>Inside</h1><p>Body text here with one <a href="/a">link</a>.</p>
    <div class="related"><a href="/1">One</a> <a href="/2">Two</a> <a href="/3">Three</a></div></main></body>"""
    ids = iter(range(40, 100))
    page = extract(html, "http://h/", main_only=True, number_link=lambda url, text: next(ids))
    assert "Outside" not in page.text and "# Inside" in page.text
    assert "【40†link】" in page.text and "Three" not in page.text


def test_charsets():
    gbk = '<html><head><meta charset="gbk"><title>故宫</title></head><body><p>北京</p></body></html>'.encode("gbk")
    assert sniff_charset(gbk) == "gb18030"
    assert extract(decode_html(gbk)).title == "故宫"
    assert sniff_charset(b"x", "text/html; charset=Shift_JIS") == "shift_jis"
    assert sniff_charset("<p>é</p>".encode()) == "utf-8"
    assert decode_html(b"\xff\xfeh\x00i\x00") == "hi"


def test_wrapper_with_a_boilerplate_like_class_keeps_the_article():
    html = """<body><div class="layout has-sidebar"><aside class="sidebar">menu</aside>
    <article><h1>Real content</h1><p>Body.</p></article></div><div class="cookie-notice">Accept?</div></body>"""
    text = extract(html).text
    assert "# Real content" in text and "Body." in text
    assert "menu" not in text and "Accept?" not in text
