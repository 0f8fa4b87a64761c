"""Rendering 【id†text】 citations as links."""

from glm_agent.tools.browser import Citations, render_citations


def test_render_citations_markdown_and_text():
    cites = Citations()
    a = cites.add("Python guide", "http://docs.test/python.html")
    b = cites.add("Rust [guide]", "http://docs.test/rust page.html")
    text = f"Python dates from 1991【{a}†source】; Rust from 2015【{b}†Rust guide†docs.test】. Unknown【99†x】."
    out = render_citations(text, cites.items)
    assert "1991[Python guide](http://docs.test/python.html);" in out
    assert "[Rust (guide)](http://docs.test/rust%20page.html)" in out
    assert "【99†x】" in out  # unknown ids stay as written
    # str keys (JSON round trip) and (title, url) pairs work too.
    assert render_citations("see 【0】", {"0": ("T", "http://u/")}, style="text") == "see T (http://u/)"
    assert cites.subset([b, 42]) == {str(b): {"title": "Rust [guide]", "url": "http://docs.test/rust page.html"}}
