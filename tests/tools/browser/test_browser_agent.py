"""End to end: an agent searches, clicks, and answers with a citation that renders as a link."""

from __future__ import annotations

import re

import pytest

from glm_agent.agent import Agent
from glm_agent.core.events import ToolCallFinished
from glm_agent.core.messages import ToolCall, ToolMessage
from glm_agent.models.scripted import ScriptedModel
from glm_agent.tools.browser import BrowserError, BrowserTool, LocalIndexProvider, find_chromium, render_citations


def _last_observation(messages) -> str:
    return next(m.content for m in reversed(messages) if isinstance(m, ToolMessage))


def click_the_rust_result(messages):
    results = _last_observation(messages)
    rust = re.search(r"【(\d+)†Rust guide†", results).group(1)
    python = re.search(r"【(\d+)†Python guide†", results).group(1)
    go = re.search(r"【(\d+)†Go guide†", results).group(1)
    return ToolCall(name="simple_browser", arguments={"action": f"mclick([{rust}, {python}, {go}])"})


def answer_with_citation(messages):
    quotes = _last_observation(messages)
    qid = re.search(r"【(\d+)†Rust guide†", quotes).group(1)
    year = re.search(r"Rust 1\.0 was released in (\w+ \d{4})", quotes).group(1)
    return f"Rust 1.0 came out in {year}【{qid}†source】."


async def test_search_click_answer_with_citation(site, tmp_path):
    try:
        find_chromium()
    except BrowserError as exc:
        pytest.skip(str(exc))
    browser = BrowserTool(LocalIndexProvider(site.url("/")), allow=[site.host])
    model = ScriptedModel(
        [
            ToolCall(name="simple_browser", arguments={"action": 'search("rust programming language release")'}),
            click_the_rust_result,
            answer_with_citation,
        ]
    )
    citations: dict = {}
    async with Agent(model, tools=[browser], workspace=tmp_path) as agent:
        events = [event async for event in agent.stream("When did Rust 1.0 come out? Cite your source.")]
        finished = [e for e in events if isinstance(e, ToolCallFinished)]
        assert [e.result.metadata for e in finished] == ["browser_result", "quote_result"]
        assert not any(e.result.is_error for e in finished)
        for event in finished:  # what the CLI collects from the event stream
            citations.update(event.result.data["citations"])
        answer = agent.history[-1].content
    assert answer.startswith("Rust 1.0 came out in May 2015【")
    rendered = render_citations(answer, citations)
    assert rendered == f"Rust 1.0 came out in May 2015[Rust guide]({site.url('/rust.html')})."
    assert render_citations(answer, browser.citations) == rendered  # the tool's own registry agrees
    assert not browser.session.started  # the agent closed the browser
