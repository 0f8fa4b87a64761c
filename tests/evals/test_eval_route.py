"""The `route` suite: its data, its first-step judge, its oracle, its per-category intervals."""

from __future__ import annotations

import json

import pytest

from glm_agent.core.messages import AssistantMessage, ToolCall
from glm_agent.evals.oracle import OracleFactory
from glm_agent.evals.suites import SUITE_NAMES, make_suite
from glm_agent.evals.suites.route import USER_TOOLS, builtin_tools, check_route, load_route
from glm_agent.evals.task import TaskFileError, wilson


def _by_id(suite):
    return {s.id: s for s in suite.samples()}


def test_shipped_prompts_cover_every_route():
    assert "route" in SUITE_NAMES
    samples = make_suite("route").samples()
    assert len(samples) >= 60
    cats = {s.category for s in samples}
    assert cats == {"python", "browser", "image", "user", "none"}
    for cat in cats:
        assert sum(s.category == cat for s in samples) >= 10, cat
    labels = {s.gold["tool"] for s in samples}
    assert {t["name"] for t in USER_TOOLS} <= labels  # every user tool has prompts that need it
    assert None in labels
    assert len({s.prompt.lower() for s in samples}) == len(samples)  # no duplicate prompt


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ({"id": "a", "category": "python", "prompt": "x"}, "missing field 'tool'"),
        ({"id": "a", "category": "maths", "tool": "python", "prompt": "x"}, "unknown category"),
        ({"id": "a", "category": "user", "tool": "get_time", "prompt": "x"}, "unknown tool 'get_time'"),
        ({"id": "a", "category": "none", "tool": "python", "prompt": "x"}, "tool null"),
        ({"id": "a", "category": "python", "tool": None, "prompt": "x"}, "tool null"),
        ({"id": "a", "category": "image", "tool": "browser", "prompt": "x"}, "expects tool 'image'"),
        ({"id": "a", "category": "user", "tool": "python", "prompt": "x"}, "expects a user tool"),
        ({"id": "a", "category": "python", "tool": "python", "prompt": "  "}, "empty prompt"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, line, problem):
    path = tmp_path / "route.jsonl"
    good = {"id": "ok", "category": "none", "tool": None, "prompt": "hi"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(TaskFileError, match=problem) as info:
        load_route(path)
    assert f"{path}:2" in str(info.value)


def test_data_option_loads_another_file(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"id": "w", "category": "user", "tool": "get_weather", "prompt": "Rain in Rome?"}))
    samples = make_suite("route", data=path).samples()
    assert [(s.id, s.gold["tool"]) for s in samples] == [("w", "get_weather")]


def test_check_route_rules():
    assert check_route([], None)[0]
    assert not check_route([ToolCall(name="python", arguments={})], None)[0]
    assert not check_route([], "python")[0]
    assert check_route([ToolCall(name="python", arguments={})], "python")[0]
    assert not check_route([ToolCall(name="get_weather", arguments={})], "python")[0]
    # Two calls in the first step: both must be the labelled tool.
    both = [ToolCall(name="python", arguments={}), ToolCall(name="get_weather", arguments={"city": "x"})]
    assert not check_route(both, "python")[0]


async def test_samples_offer_the_real_builtins_and_the_user_tools(tmp_path):
    suite = make_suite("route")
    env = await suite.setup(suite.samples()[0], tmp_path)
    offered = {t.name: t for t in env.tools}
    real = builtin_tools()
    assert {"python", "simple_browser", "cogview"} <= set(offered)
    assert {t["name"] for t in USER_TOOLS} <= set(offered)
    from glm_agent.tools.browser.tool import BrowserTool
    from glm_agent.tools.image.tool import ImageTool

    # What the model reads is the built-in tools' own text, so improving it moves this suite.
    assert offered["simple_browser"].description == BrowserTool.description
    assert offered["cogview"].description == ImageTool.description
    assert offered["python"].description == real["python"].description
    assert env.max_steps == 1 and env.stop_after_tools and env.system is None


async def test_first_step_is_scored_and_nothing_runs(ev, tmp_path):
    suite = make_suite("route")
    samples = _by_id(suite)
    date = next(s for s in samples.values() if s.prompt.startswith("What's 30 days after 2024-02-14"))
    thanks = next(s for s in samples.values() if s.prompt == "Thanks, that's all!")
    weather = next(s for s in samples.values() if s.gold["tool"] == "get_weather")
    plot = next(s for s in samples.values() if s.category == "python" and "Plot" in s.prompt)
    picked = {date.id, thanks.id, weather.id, plot.id}

    class Subset(type(suite)):
        def load(self):
            return [s for s in suite.samples() if s.id in picked]

    turns = {
        date.id: ToolCall(name="get_weather", arguments={"city": "Paris"}),  # wrong tool
        thanks.id: ToolCall(name="simple_browser", arguments={"action": "search", "query": "thanks"}),  # no tool wanted
        weather.id: ToolCall(name="get_weather", arguments={"city": "Lisbon"}),  # right
        plot.id: AssistantMessage(content="Here is how you could plot it: ..."),  # no call, python wanted
    }
    summary = await ev.run_suite(Subset(), ev.per_sample(lambda su, sa: [turns[sa.id]]), tmp_path)
    recs = {r["id"]: r for r in ev.records(tmp_path)}
    assert {i: recs[i]["score"] for i in picked} == {date.id: 0.0, thanks.id: 0.0, weather.id: 1.0, plot.id: 0.0}
    assert recs[date.id]["judge"]["calls"] == ["get_weather"]
    assert recs[date.id]["judge"]["expected"] == "python"
    assert "expected no tool" in recs[thanks.id]["detail"]
    assert all(recs[i]["status"] == "completed" and recs[i]["steps"] == 1 for i in picked)
    cats = summary["suites"]["route"]["per_category"]
    assert cats["user"]["n"] == 1 and cats["user"]["score"] == 1.0
    assert cats["user"]["ci95"] == pytest.approx(list(wilson(1, 1)))
    assert cats["python"]["n"] == 2 and cats["python"]["score"] == 0.0
    assert list(cats) == ["python", "user", "none"]  # the suite's order, not the alphabet
    report = (tmp_path / "report.md").read_text()
    lo, hi = wilson(0, 2)
    assert f"| python | 2 | 0.0 | 0.0–{100 * hi:.1f} |" in report and lo == 0.0


async def test_oracle_is_perfect_on_every_category(ev, tmp_path):
    summary = await ev.run_suite(make_suite("route"), OracleFactory(), tmp_path)
    route = summary["suites"]["route"]
    assert route["n"] >= 60 and route["score"] == 1.0
    assert set(route["per_category"]) == {"python", "browser", "image", "user", "none"}
    assert all(v["score"] == 1.0 for v in route["per_category"].values())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<tool_call>\n{"name": "python", "arguments": {"code": "import datetime\\nprint(', ["python"]),
        ('```json\n{"name": "get_weather", "arguments": {"ci', ["get_weather"]),
        ('{"name": "cogview", "argu', ["cogview"]),
        ("Sure! The answer is 42.", []),
        ('Here is an example: {"name": "python"}', []),  # prose first: not a call
    ],
)
async def test_a_call_cut_off_by_the_token_cap_counts_by_its_name(tmp_path, text, expected):
    from glm_agent.core.events import RunResult

    suite = make_suite("route")
    sample = next(s for s in suite.samples() if s.gold["tool"] == "python")
    env = await suite.setup(sample, tmp_path)
    result = RunResult(output=text, messages=[AssistantMessage(content=text)], status="completed", steps=1)
    judgement = await suite.judge(sample, env, result)
    assert judgement.info["calls"] == expected
    assert judgement.passed == (expected == ["python"])
