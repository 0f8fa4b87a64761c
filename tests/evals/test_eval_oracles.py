"""Every suite's oracle (gold actions replayed through the real environment) scores >= 99%.

This is how environments and judges are tested without a model: real SQLite, real bubblewrap
sandboxes, a real Jupyter kernel and a real Chromium against the real shop server.
"""

from __future__ import annotations

import shutil

import pytest

from glm_agent.evals.oracle import OracleFactory
from glm_agent.evals.suites import make_suite


def _needs_bwrap() -> None:
    from glm_agent.sandbox.bwrap import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap cannot create namespaces here")


def _assert_oracle(summary: dict, suite: str, n: int) -> None:
    s = summary["suites"][suite]
    assert s["n"] == n
    assert s["judged"] == n, s["statuses"]
    assert s["score"] >= 0.99, s


async def test_db_oracle(ev, tmp_path):
    summary = await ev.run_suite(make_suite("db"), OracleFactory(), tmp_path, limit=5)
    _assert_oracle(summary, "db", 5)
    cats = {r["category"] for r in ev.records(tmp_path)}
    assert cats == {"SELECT", "INSERT", "UPDATE"}


async def test_db_oracle_on_agentbench_dev_all_60(ev, tmp_path):
    """On SQLite the oracle runs each gold statement; the 16 SELECT tasks whose gold SQL SQLite
    cannot run, or whose result disagrees with the label, are unsupported with that reason (the
    MariaDB run is in test_eval_db_mariadb.py)."""
    suite = make_suite("db", data=ev.agentbench_file("db_dev.jsonl"))
    summary = await ev.run_suite(suite, OracleFactory(), tmp_path, concurrency=4)
    s = summary["suites"]["db"]
    assert s["n"] == 60 and s["statuses"] == {"completed": 44, "unsupported": 16}, s["statuses"]
    assert s["score"] == 1.0 and s["overall_cat_accuracy"] == 1.0
    unsupported = [r for r in ev.records(tmp_path) if r["status"] == "unsupported"]
    assert all(r["category"] == "SELECT" and "sqlite" in r["detail"] for r in unsupported)


async def test_fc_oracle(ev, tmp_path):
    summary = await ev.run_suite(make_suite("fc"), OracleFactory(), tmp_path, limit=5)
    _assert_oracle(summary, "fc", 5)
    assert {r["category"] for r in ev.records(tmp_path)} == {"simple", "multiple", "parallel", "parallel_multiple", "irrelevance"}


async def test_os_oracle(ev, tmp_path):
    _needs_bwrap()
    suite = make_suite("os")
    # a counting task, a size task, a match task, an action task, the background-process task
    ids = {"os-0", "os-9", "os-17", "os-20", "os-26"}
    suite._samples = [s for s in suite.samples() if s.id in ids]
    summary = await ev.run_suite(suite, OracleFactory(), tmp_path, concurrency=2)
    _assert_oracle(summary, "os", 5)


async def test_os_oracle_on_agentbench_dev(ev, tmp_path):
    _needs_bwrap()
    suite = make_suite("os", data=ev.agentbench_file("os_dev.json"))
    summary = await ev.run_suite(suite, OracleFactory(), tmp_path, concurrency=2)
    s = summary["suites"]["os"]
    assert s["n"] == 26
    # calc tasks (check/0.sh) and the stock-log task (init file) are not shipped: unsupported.
    # Everything else that runs must pass.
    assert s["statuses"].get("unsupported") == 3
    assert s["judged"] >= 19
    assert s["score"] >= 0.99
    unsupported = [r for r in ev.records(tmp_path) if r["status"] == "unsupported"]
    assert all("not shipped" in r["detail"] for r in unsupported)
    assert all(r["messages"] == [] for r in unsupported)  # the model was never called


async def test_math_oracle(ev, tmp_path):
    _needs_bwrap()
    summary = await ev.run_suite(make_suite("math"), OracleFactory(), tmp_path, limit=3)
    _assert_oracle(summary, "math", 3)


async def test_web_oracle(ev, tmp_path):
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no Chromium on this machine")
    pytest.importorskip("playwright")
    summary = await ev.run_suite(make_suite("web"), OracleFactory(), tmp_path, limit=3)
    _assert_oracle(summary, "web", 3)
    for r in ev.records(tmp_path):
        assert r["judge"]["bought"], r  # the shop recorded the purchase


def _shell_commands(record: dict) -> list[str]:
    return [c["arguments"]["command"] for m in record["messages"] if m["role"] == "assistant"
            for c in m.get("tool_calls") or []]


async def test_os_oracle_answers_from_the_environment_not_the_label(ev, tmp_path):
    """A match task whose label disagrees with the machine: the oracle runs the example in the
    task's environment and answers what it printed, so it fails; a consistent task passes."""
    import json

    _needs_bwrap()
    tasks = [{"description": "What number is in /root/n?",
              "create": {"init": {"code": f"echo {n} > /root/n"}},
              "evaluation": {"match": "7", "example": {"code": "cat /root/n"}}} for n in (7, 8)]
    data = tmp_path / "tasks.json"
    data.write_text(json.dumps(tasks))
    summary = await ev.run_suite(make_suite("os", data=data), OracleFactory(), tmp_path / "run")
    by_id = {r["id"]: r for r in ev.records(tmp_path / "run")}
    assert (by_id["tasks-0"]["score"], by_id["tasks-1"]["score"]) == (1.0, 0.0), summary
    assert by_id["tasks-1"]["judge"]["answer"] == "8"
    assert all("cat /root/n" in _shell_commands(r)[0] for r in by_id.values())


async def test_os_oracle_runs_example_files_and_checks_without_null(ev, tmp_path):
    """AgentBench's layout: the example given as a file runs through the shell tool; a check list
    without null gets the example's stdout as its answer ($1), as AgentBench passes it."""
    _needs_bwrap()
    base = ev.agentbench_os_layout(tmp_path / "ab")
    summary = await ev.run_suite(make_suite("os", data=base), OracleFactory(), tmp_path / "run")
    _assert_oracle(summary, "os", 2)
    by_id = {r["id"]: r for r in ev.records(tmp_path / "run")}
    assert "ls /root/d | wc -l" in _shell_commands(by_id["std-001-tasks-0"])[0]
    assert by_id["std-001-tasks-0"]["judge"]["answer"] == "3"
    assert by_id["std-001-tasks-1"]["judge"]["answer"] == "yes"
