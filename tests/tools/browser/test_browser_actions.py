"""Parsing browser actions: GLM-4 action text (ast literals only) and JSON arguments."""

from __future__ import annotations

import pytest

from glm_agent.tools.browser import BrowserError, SearchError
from glm_agent.tools.browser.actions import ActionError, parse_action_text, parse_arguments


def one(text):
    (action,) = parse_action_text(text)
    return action.name, action.args


def test_glm4_action_lines():
    assert one('search("GLM-4 release", recency_days=7)') == ("search", {"query": "GLM-4 release", "recency_days": 7})
    assert one("search('天气')") == ("search", {"query": "天气", "recency_days": None})
    assert one("mclick([0, 3, 5])") == ("mclick", {"ids": [0, 3, 5]})
    assert one("mclick(ids=[1, 1, 2])") == ("mclick", {"ids": [1, 2]})
    assert one("mclick(0, 3)") == ("mclick", {"ids": [0, 3]})
    assert one('open_url("https://example.com/")') == ("open_url", {"url": "https://example.com/"})
    assert one("open_url(4)") == ("open_url", {"url": 4})
    assert one("scroll()") == ("scroll", {"page": "next"})
    assert one("scroll(3)") == ("scroll", {"page": 3})
    assert one('find("lamp")') == ("find", {"pattern": "lamp"})


def test_tolerates_what_models_emit():
    assert one('```\nsearch("x")\n```') == ("search", {"query": "x", "recency_days": None})
    assert one('search("x")<|observation|>') == ("search", {"query": "x", "recency_days": None})
    assert one("search(“智谱 GLM”)") == ("search", {"query": "智谱 GLM", "recency_days": None})
    actions = parse_action_text('search("a")\nmclick([1, 2])')
    assert [a.name for a in actions] == ["search", "mclick"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("search(", "could not parse"),
        ("delete_everything()", "unknown browser function"),
        ("search(__import__('os').system('id'))", "not a literal"),
        ("x = 1", "not a browser function call"),
        ("search()", "needs a query"),
        ("mclick([])", "at least one id"),
        ("mclick(['a'])", "must be a number"),
        ("search('x', recency_days=-2)", "positive"),
        ("search('x', days=3)", "has no argument 'days'"),
        ("", "empty browser action"),
    ],
)
def test_malformed_actions_say_what_is_wrong(text, words):
    with pytest.raises(ActionError, match=words):
        parse_action_text(text)


def test_json_arguments():
    (a,) = parse_arguments({"action": "search", "query": "rust", "recency_days": 30})
    assert (a.name, a.args) == ("search", {"query": "rust", "recency_days": 30})
    (a,) = parse_arguments({"action": "mclick", "ids": ["1", 2]})
    assert a.args == {"ids": [1, 2]}
    (a,) = parse_arguments({"action": "scroll", "cursor": 2})
    assert a.args == {"page": 2}
    (a,) = parse_arguments({"action": "open_url", "ids": [7]})
    assert a.args == {"url": 7}
    (a,) = parse_arguments({"action": "search", "query": "x", "ids": [], "url": "", "page": None})
    assert a.args == {"query": "x", "recency_days": None}  # other actions' keys are ignored
    (a,) = parse_arguments({"action": 'find("x")'})  # action text inside JSON
    assert a.args == {"pattern": "x"}
    with pytest.raises(ActionError, match="missing `action`"):
        parse_arguments({"query": "x"})


def test_glm4_dialect_bodies_reach_the_browser_parser():
    from glm_agent.models.dialects import get_dialect
    from glm_agent.tools.browser import BrowserTool

    spec = BrowserTool().spec()
    glm4 = get_dialect("glm4")
    assert "\n## simple_browser\n\n你可以使用 `simple_browser` 工具" in glm4.render([], [spec])  # the built-in
    _, (call,) = glm4.parse('simple_browser\nsearch("GLM-4", recency_days=3)\n', [spec])
    (a,) = parse_arguments(call.arguments)
    assert (a.name, a.args) == ("search", {"query": "GLM-4", "recency_days": 3})
    _, (call,) = glm4.parse('simple_browser\n{"action": "mclick", "ids": [1, 2]}', [spec])
    (a,) = parse_arguments(call.arguments)
    assert (a.name, a.args) == ("mclick", {"ids": [1, 2]})


@pytest.mark.parametrize("error,builtin", [(ActionError, ValueError), (BrowserError, RuntimeError), (SearchError, RuntimeError)])
def test_browser_errors_are_glm_agent_errors(error, builtin):
    from glm_agent.core.errors import GlmAgentError

    assert issubclass(error, GlmAgentError) and issubclass(error, builtin)
