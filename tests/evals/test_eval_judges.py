"""Judges reject wrong answers: unit rules per suite, and wrong agents run through real envs."""

from __future__ import annotations

import json
import shutil

import pytest

from glm_agent.core.messages import ToolCall
from glm_agent.evals.suites import make_suite
from glm_agent.evals.suites.db import answers_match, parse_final_answer
from glm_agent.evals.suites.fc import check_calls
from glm_agent.evals.suites.math import extract_number, numbers_match
from glm_agent.evals.suites.os_judges import (
    MATCHERS,
    integer_match,
    match_answer,
    matchers,
    parse_answer,
    size_match,
    string_match,
)
from glm_agent.evals.suites.web import reward


# -- db ----------------------------------------------------------------------------------------
def test_db_answer_parsing_and_matching():
    assert parse_final_answer('I ran it.\nFinal Answer: ["Brno"]') == ["Brno"]
    assert parse_final_answer("Final Answer: ['a', 'b']") == ["a", "b"]
    assert parse_final_answer("Final Answer: 42") == ["42"]
    assert answers_match(["26"], ["26"])
    assert answers_match(["1"], ["1.0"])  # number normalisation
    assert answers_match(["64666.666666"], ["64666.67"])  # label precision
    assert answers_match(["b", "a"], ["a", "b"])  # order-insensitive
    assert answers_match([], ["none"])
    # wrong answers
    assert not answers_match(["27"], ["26"])
    assert not answers_match(["a"], ["a", "b"])
    assert not answers_match(["a", "b", "c"], ["a", "b"])
    assert not answers_match(None, ["x"])
    assert not answers_match(["64666.6"], ["64666.67"])


async def test_db_wrong_agents_fail(ev, tmp_path):
    """A wrong SELECT answer, a wrong UPDATE and no change at all all score 0."""
    suite = make_suite("db")

    def wrong(suite, sample):
        if sample.category == "SELECT":
            return ['Final Answer: ["definitely wrong"]']
        table = sample.gold["table"]["table_name"]
        col = sample.gold["table"]["table_info"]["columns"][0]["name"]
        if sample.category == "UPDATE":
            return [ToolCall(name="sql", arguments={"query": f'UPDATE "{table}" SET "{col}" = \'x\''}), "Final Answer: done"]
        return ["Final Answer: done"]  # INSERT without inserting

    summary = await ev.run_suite(suite, ev.per_sample(wrong), tmp_path, limit=6)
    assert summary["suites"]["db"]["score"] == 0.0
    assert {r["category"] for r in ev.records(tmp_path)} == {"SELECT", "INSERT", "UPDATE"}
    assert all("differs" in r["detail"] or "vs label" in r["detail"] for r in ev.records(tmp_path))


async def test_db_sql_tool_reports_errors(tmp_path):
    from glm_agent.core.contracts import ToolContext
    from glm_agent.evals.suites.db import SQLTool, create_database

    sample = make_suite("db").samples()[0]
    create_database(tmp_path / "t.db", sample.gold["table"])
    tool = SQLTool(tmp_path / "t.db")
    ctx = ToolContext("s", tmp_path)
    bad = await tool.call({"query": "SELEC nonsense"}, ctx)
    assert bad.is_error and "syntax error" in bad.content
    two = await tool.call({"query": "SELECT 1; SELECT 2"}, ctx)
    assert two.is_error
    ok = await tool.call({"query": "```sql\nSELECT COUNT(*) FROM city_stats\n```"}, ctx)
    assert not ok.is_error and "[12]" in ok.content


# -- fc ----------------------------------------------------------------------------------------
FUNCS = [
    {"name": "math.gcd", "parameters": {"type": "dict", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}},
    {"name": "weather", "parameters": {"type": "dict", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}},
]
GT_SIMPLE = [{"weather": {"city": ["New York", "NYC"], "unit": ["celsius", ""], "days": [3]}}]


def call(name, **args):
    return ToolCall(name=name, arguments=args)


def test_fc_ast_checker_accepts_right_calls():
    assert check_calls([call("weather", city="new york", days=3)], FUNCS, GT_SIMPLE, "simple")[0]
    assert check_calls([call("weather", city="NYC", days=3, unit="Celsius")], FUNCS, GT_SIMPLE, "simple")[0]
    gt = [{"math.gcd": {"a": [12], "b": [18]}}, {"weather": {"city": ["Oslo"], "unit": [""], "days": [1, ""]}}]
    # parallel: any order; dotted names match their sanitised tool names
    assert check_calls([call("weather", city="Oslo"), call("math_gcd", a=12, b=18)], FUNCS, gt, "parallel_multiple")[0]
    assert check_calls([], FUNCS, [], "irrelevance")[0]


@pytest.mark.parametrize(
    "calls, reason",
    [
        ([call("math_gcd", a=1, b=2)], "called"),  # wrong function
        ([call("weather", city="Boston", days=3)], "not one of"),  # wrong value
        ([call("weather", days=3)], "missing required"),
        ([call("weather", city="NYC", days=3, country="US")], "unexpected"),
        ([call("weather", city="NYC", days="3")], "wrong type"),
        ([call("weather", city="NYC")], "missing argument 'days'"),  # not optional in the answer
        ([call("weather", city="NYC", days=3)] * 2, "expected 1"),
        ([], "no function"),
        ([ToolCall(name="weather", arguments={}, arguments_error="bad JSON")], "could not be parsed"),
    ],
)
def test_fc_ast_checker_rejects_wrong_calls(calls, reason):
    ok, why = check_calls(calls, FUNCS, GT_SIMPLE, "simple")
    assert not ok and reason in why


def test_fc_checker_parallel_needs_every_call_and_irrelevance_needs_none():
    gt = [{"math.gcd": {"a": [12], "b": [18]}}, {"math.gcd": {"a": [4], "b": [6]}}]
    assert not check_calls([call("math_gcd", a=12, b=18), call("math_gcd", a=12, b=18)], FUNCS, gt, "parallel")[0]
    assert not check_calls([call("math_gcd", a=12, b=18)], FUNCS, gt, "parallel")[0]
    assert not check_calls([call("weather", city="x")], FUNCS, [], "irrelevance")[0]


async def test_fc_wrong_agent_scores_zero(ev, tmp_path):
    def wrong(suite, sample):
        if sample.category == "irrelevance":
            return [[ToolCall(name=sample.gold["functions"][0]["name"].replace(".", "_"), arguments={})]]
        return ["I would rather not call anything."]

    summary = await ev.run_suite(make_suite("fc"), ev.per_sample(wrong), tmp_path, limit=5)
    assert summary["suites"]["fc"]["score"] == 0.0


# -- math --------------------------------------------------------------------------------------
def test_math_numeric_judging():
    assert numbers_match(extract_number("So she pays $1,234.50 in total.\n#### $1,234.50"), "1234.5")
    assert numbers_match(extract_number("The answer is 42 apples."), "42")
    assert numbers_match(extract_number("\\boxed{7}"), "7")
    assert numbers_match(extract_number("first 3, then 5, finally 18"), "18")
    assert numbers_match(extract_number("#### 66.0"), "66")
    assert not numbers_match(extract_number("#### 41"), "42")
    assert not numbers_match(extract_number("no idea"), "42")
    assert not numbers_match(extract_number("#### 6.5"), "6.4")


async def test_math_wrong_agent_fails(ev, tmp_path):
    def wrong(suite, sample):
        return [f"#### {float(sample.gold['number']) + 1}"]

    summary = await ev.run_suite(make_suite("math"), ev.per_sample(wrong), tmp_path, limit=3)
    assert summary["suites"]["math"]["score"] == 0.0


# -- os ----------------------------------------------------------------------------------------
def test_os_checkers_are_agentbench_exact():
    """AgentBench's check/*.py: int(argv[1]) == int(argv[2]), sizes equal in bytes, newlines normalised."""
    assert integer_match("5", "5\n") and integer_match(" 5 ", "5") and not integer_match("6", "5")
    assert not integer_match("There are 5 files.", "5\n")  # their int() raises: the task fails
    assert not integer_match("5.0", "5") and not integer_match("", "5")
    assert size_match("8K", "8192") and size_match("4.0M".replace(".0", ""), "4194304")
    assert not size_match("8.0K", "8K")  # int("8.0") raises upstream
    assert not size_match("8200", "8192") and not size_match("7.9K", "8K")  # no slack
    # Where upstream cannot read the expected value itself (du -h's "6.1G"), sizes compare exactly.
    assert size_match("6.1G", "6.1G\n") and not size_match("6.2G", "6.1G") and not size_match("", "6.1G")
    assert string_match(" log\r\n", "log") and not string_match("log2", "log")
    assert parse_answer("Think: done\nAct: answer(3)") == "3"
    assert parse_answer("I counted them.\nAnswer: 17") == "17"
    assert parse_answer("Answer: a.txt\nb.txt\n") == "a.txt\nb.txt"  # answers may span lines
    assert parse_answer("17") == "17"


def test_os_lenient_checkers_are_a_choice():
    lenient = matchers("lenient")
    assert lenient["integer-match"]("There are 5 files.", "5\n")
    assert lenient["size-match"]("8.0K", "8192") and lenient["size-match"]("8200", "8192")
    assert matchers("agentbench") is MATCHERS
    assert match_answer(" no ", {"answer": "no", "strip": True})
    assert not match_answer("no", {"answer": "no ", "strip": True})  # AgentBench: expected as written
    assert match_answer("no", {"answer": "no ", "strip": True}, "lenient")
    with pytest.raises(ValueError, match="agentbench, lenient"):
        matchers("loose")


def _os_task_file(tmp_path, tasks):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(tasks))
    return path


def _bwrap():
    from glm_agent.sandbox.bwrap import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap cannot create namespaces here")


async def test_os_judge_modes_through_the_runner(ev, tmp_path):
    """A wordy integer answer fails AgentBench's judge and passes the lenient one; the mode is
    recorded in config.json."""
    _bwrap()
    base = ev.agentbench_os_layout(tmp_path / "ab")
    wordy = ev.per_sample(lambda suite, sample: ["Answer: There are 3 files."])
    scores = {}
    for mode in ("agentbench", "lenient"):
        suite = make_suite("os", data=base, judge=mode)
        suite._samples = suite.samples()[:1]
        summary = await ev.run_suite(suite, wordy, tmp_path / mode)
        scores[mode] = summary["suites"]["os"]["score"]
        assert json.loads((tmp_path / mode / "config.json").read_text())["settings"] == {"os": {"judge": mode}}
    assert scores == {"agentbench": 0.0, "lenient": 1.0}


async def test_os_judge_takes_the_example_stdout_only(ev, tmp_path):
    """The example's stderr is not part of the expected value (AgentBench appends stdout)."""
    _bwrap()
    task = {"description": "Say hello.", "evaluation": {
        "check": [None, {"language": "python", "file": "check/string-match.py"}],
        "example": {"code": "echo hello; echo 'warning: noise' >&2"}}}
    suite = make_suite("os", data=_os_task_file(tmp_path, [task]))
    summary = await ev.run_suite(suite, ev.per_sample(lambda suite, sample: ["Answer: hello"]), tmp_path / "run")
    record = ev.records(tmp_path / "run")[0]
    assert summary["suites"]["os"]["score"] == 1.0, record["detail"]


async def test_os_wrong_agents_fail(ev, tmp_path):
    from glm_agent.sandbox.bwrap import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap cannot create namespaces here")
    suite = make_suite("os")
    ids = {"os-0", "os-4", "os-17", "os-20", "os-21"}
    suite._samples = [s for s in suite.samples() if s.id in ids]

    def wrong(suite, sample):
        if "action" == sample.category:
            # claims success without doing it / does something else
            return [ToolCall(name="shell", arguments={"command": "echo nothing > /root/unrelated"}), "Answer: done"]
        return ["Answer: 999"]

    summary = await ev.run_suite(suite, ev.per_sample(wrong), tmp_path, concurrency=2)
    assert summary["suites"]["os"]["n"] == 5
    assert summary["suites"]["os"]["score"] == 0.0, [r["detail"] for r in ev.records(tmp_path)]


# -- web ---------------------------------------------------------------------------------------
def test_web_reward_partial_and_full():
    task = {"constraints": {"category": "scarf", "color": "red", "material": "wool", "max_price": 30},
            "goal": "cheapest", "gold_ids": [7]}
    gold = {"id": 7, "category": "scarf", "color": "red", "material": "wool", "price": 18.5, "rating": 4.4}
    assert reward(gold, task) == (1.0, [])
    pricier = dict(gold, id=8, price=27.0)
    score, unmet = reward(pricier, task)
    assert score == pytest.approx(4 / 5) and "cheapest" in unmet[0]
    blue_silk = dict(gold, id=9, color="blue", material="silk", price=40.0)
    assert reward(blue_silk, task)[0] == pytest.approx(1 / 5)
    assert reward(None, task)[0] == 0.0


async def test_web_wrong_purchase_through_browser(ev, tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium on this machine")
    pytest.importorskip("playwright")
    from glm_agent.evals.suites.web import _base_from

    suite = make_suite("web")
    suite._samples = [s for s in suite.samples() if s.id == "web-01"]
    wrong_id = 248  # a red wool scarf, but $34.50: over budget and not the cheapest

    def buy_wrong(messages):
        return ToolCall(name="simple_browser", arguments={"action": "open_url", "url": f"{_base_from(messages)}/buy/{wrong_id}"})

    summary = await ev.run_suite(suite, ev.per_sample(lambda su, sa: [buy_wrong, "bought it"]), tmp_path)
    s = summary["suites"]["web"]
    assert 0.0 < s["score"] < 1.0 and s["passed"] == 0
    (r,) = ev.records(tmp_path)
    assert r["judge"]["bought"] == [wrong_id] and "price" in r["detail"]


async def test_os_task_no_answer_can_pass_is_unsupported(ev, tmp_path):
    """An example whose own output its checker rejects (int("five") raises upstream) leaves no
    answer that passes: the task is `unsupported`, not a failure of the model."""
    _bwrap()
    task = {"description": "Count.", "evaluation": {
        "check": [None, {"language": "python", "file": "check/integer-match.py"}], "example": "echo five"}}
    summary = await ev.run_suite(make_suite("os", data=_os_task_file(tmp_path, [task])),
                                 ev.per_sample(lambda suite, sample: ["Answer: 5"]), tmp_path / "run")
    (record,) = ev.records(tmp_path / "run")
    assert record["status"] == "unsupported" and "no answer can pass" in record["detail"], record["detail"]
    assert summary["suites"]["os"]["judged"] == 0


def test_needs_network_counts_setup_installs_the_image_already_has_as_offline():
    from glm_agent.evals.suites.os import installs_offline, needs_network

    def offline(packages):
        return all(p in ("sudo", "bash") for p in packages)

    script = "apt update && apt install sudo -y && echo '' > /etc/sudoers"
    assert needs_network(script, offline_apt=offline) is None
    assert needs_network(script) == "apt install"  # a solution's step: always the network
    assert needs_network("apt-get update") == "apt-get update"
    assert needs_network("apt-get -y install sudo cowsay", offline_apt=offline) == "apt-get -y install"
    assert needs_network("apt-get update", offline_apt=lambda p: False) is None
    assert needs_network("apt-get install -y sudo 2>&1 >/dev/null && echo", offline_apt=offline) is None
    assert needs_network("apt update; curl -s https://example.com/x", offline_apt=offline).startswith("curl")
    assert needs_network("pip install requests", offline_apt=offline) == "pip install"
    # The real image, this host: bubblewrap is installed (the tests need it), the other is not.
    assert installs_offline(["bubblewrap"])
    assert not installs_offline(["glm-agent-no-such-package"])
    assert needs_network("apt-get install -y bubblewrap glm-agent-no-such-package",
                         offline_apt=installs_offline) == "apt-get install"
