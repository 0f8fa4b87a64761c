"""The runner: statuses, crash isolation, timeouts, resume, reports, compare, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glm_agent.cli.eval import eval_app
from glm_agent.core.errors import ContextOverflowError
from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.core.messages import ToolCall
from glm_agent.evals.compare import compare_runs, render_comparison
from glm_agent.evals.oracle import OracleFactory
from glm_agent.evals.report import write_report
from glm_agent.evals.runner import sample_seed
from glm_agent.evals.runs import load_records
from glm_agent.evals.suites import make_suite
from glm_agent.evals.task import (
    Judgement,
    Sample,
    SampleEnv,
    Suite,
    TaskFileError,
    UnsupportedSample,
    select_samples,
    wilson,
)


class RaisingModel:
    """A model whose stream crashes on chosen samples (by the prompt's text)."""

    name = "raising"

    def __init__(self, inner, crash: bool, exc: Exception | None = None):
        self.inner, self.crash, self.exc = inner, crash, exc or RuntimeError("model exploded")

    async def stream(self, messages, tools, settings=None):
        if self.crash:
            raise self.exc
        async for event in self.inner.stream(messages, tools, settings):
            yield event

    async def aclose(self):
        pass


def crash_on(ids: set[str], exc: Exception | None = None):
    oracle = OracleFactory()

    def factory(suite, sample):
        return RaisingModel(oracle(suite, sample), sample.id in ids, exc)

    return factory


async def test_agent_crash_marks_one_sample_and_the_run_continues(ev, tmp_path):
    suite = make_suite("db")
    chosen = select_samples(suite.samples(), 4)
    bad = chosen[1].id
    summary = await ev.run_suite(suite, crash_on({bad}), tmp_path, limit=4, concurrency=2)
    by_id = {r["id"]: r for r in ev.records(tmp_path)}
    assert len(by_id) == 4
    assert by_id[bad]["status"] == "agent_error" and by_id[bad]["score"] == 0.0
    assert "model exploded" in (by_id[bad]["error"] or "")
    assert all(r["status"] == "completed" and r["passed"] for i, r in by_id.items() if i != bad)
    assert summary["suites"]["db"]["statuses"] == {"completed": 3, "agent_error": 1}


async def test_factory_that_raises_is_contained(ev, tmp_path):
    def factory(suite, sample):
        raise ValueError("cannot build a model for this one")

    await ev.run_suite(make_suite("fc"), factory, tmp_path, limit=2)
    assert [r["status"] for r in ev.records(tmp_path)] == ["agent_error", "agent_error"]


async def test_context_overflow_is_context_limit(ev, tmp_path):
    suite = make_suite("fc")
    first = select_samples(suite.samples(), 1)[0].id
    await ev.run_suite(suite, crash_on({first}, ContextOverflowError("prompt of 40000 tokens > 32768")), tmp_path, limit=1)
    (r,) = ev.records(tmp_path)
    assert r["status"] == "context_limit" and r["score"] == 0.0


async def test_timeout_and_task_limit_statuses(ev, tmp_path):
    from glm_agent.models.scripted import ScriptedModel

    class Slow:
        name = "slow"

        async def stream(self, messages, tools, settings=None):
            import asyncio

            yield TextDelta(text="thinking")
            await asyncio.sleep(30)
            yield ModelDone()

        async def aclose(self):
            pass

    await ev.run_suite(make_suite("db"), lambda su, sa: Slow(), tmp_path / "slow", limit=1, timeout=0.5)
    (r,) = ev.records(tmp_path / "slow")
    assert r["status"] == "timeout" and r["score"] == 0.0 and r["seconds"] < 10
    assert [m["role"] for m in r["messages"]][:2] == ["system", "user"]  # the partial trajectory is kept

    # A model that queries forever hits the step limit.
    def loop_model(su, sa):
        return ScriptedModel([ToolCall(name="sql", arguments={"query": "SELECT 1"})] * 20)

    await ev.run_suite(make_suite("db"), loop_model, tmp_path / "loop", limit=1, max_steps=3)
    (r,) = ev.records(tmp_path / "loop")
    assert r["status"] == "task_limit_reached" and r["steps"] == 3 and r["tool_calls"] == 3

    # The step override never applies to fc, which ends after the first tool-call turn.
    def fc_model(su, sa):
        return ScriptedModel([[ToolCall(name="set_timer", arguments={"minutes": 25})]] + ["chatter"] * 5)

    fc = make_suite("fc")
    fc._samples = [s for s in fc.samples() if s.id == "simple_7"]
    await ev.run_suite(fc, fc_model, tmp_path / "fc", max_steps=6)
    (r,) = ev.records(tmp_path / "fc")
    assert r["status"] == "completed" and r["steps"] == 1 and r["tool_calls"] == 1

    # Calling a tool that does not exist until the limit is an invalid action.
    def bad_model(su, sa):
        return ScriptedModel([ToolCall(name="mysql", arguments={"q": "x"})] * 5)

    await ev.run_suite(make_suite("db"), bad_model, tmp_path / "bad", limit=1, max_steps=2)
    (r,) = ev.records(tmp_path / "bad")
    assert r["status"] == "invalid_action" and r["invalid_calls"] == 2


async def test_resume_skips_finished_samples(ev, tmp_path):
    suite = make_suite("fc")
    await ev.run_suite(suite, OracleFactory(), tmp_path, limit=3)
    first = ev.records(tmp_path)
    assert len(first) == 3
    # Simulate a crash mid-write: a torn last line.
    with (tmp_path / "runs.jsonl").open("a") as f:
        f.write('{"suite": "fc", "id": "torn')
    calls = []

    def counting(su, sa):
        calls.append(sa.id)
        return OracleFactory()(su, sa)

    summary = await ev.run_suite(make_suite("fc"), counting, tmp_path, limit=6)
    done = {r["id"] for r in first}
    assert calls and not (set(calls) & done)  # nothing finished was run again
    assert len(calls) == 3
    assert len(load_records(tmp_path)) == 6
    assert summary["suites"]["fc"]["n"] == 6
    assert json.loads((tmp_path / "config.json").read_text())["resumed"] == 1


def test_seeds_are_deterministic_and_distinct():
    assert sample_seed(0, "db", "db-01") == sample_seed(0, "db", "db-01")
    assert sample_seed(0, "db", "db-01") != sample_seed(1, "db", "db-01")
    assert sample_seed(0, "db", "db-01") != sample_seed(0, "db", "db-02")


async def test_seed_reaches_the_model(ev, tmp_path):
    seen = []

    class Spy:
        name = "spy"

        async def stream(self, messages, tools, settings=None):
            seen.append(settings.seed)
            yield TextDelta(text="Final Answer: []")
            yield ModelDone()

        async def aclose(self):
            pass

    await ev.run_suite(make_suite("db"), Spy(), tmp_path, limit=2, seed=7)
    ids = [r["id"] for r in ev.records(tmp_path)]
    assert sorted(seen) == sorted(sample_seed(7, "db", i) for i in ids)


def test_wilson_interval():
    lo, hi = wilson(5, 5)
    assert hi == 1.0 and 0.5 < lo < 0.6
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35
    assert wilson(0, 0) == (0.0, 0.0)


async def test_report_files_are_consistent(ev, tmp_path):
    from glm_agent.evals.runner import run_eval

    def half_wrong(suite, sample):
        from glm_agent.models.scripted import ScriptedModel

        if sample.id.endswith(("0", "2", "4", "6", "8")):
            return ScriptedModel(["Final Answer: wrong"] if suite.name == "db" else ["no call"])
        return OracleFactory()(suite, sample)

    summary = await run_eval([make_suite("db"), make_suite("fc")], half_wrong, tmp_path, limit=5, progress=False)
    lines = ev.records(tmp_path)
    assert len(lines) == 10
    for r in lines:
        assert {"suite", "id", "status", "score", "steps", "prompt_tokens", "completion_tokens", "seconds", "messages"} <= set(r)
        assert r["messages"] and r["messages"][0] == {"role": "user", "content": r["prompt"]}
        assert r["system"]
    overall = json.loads((tmp_path / "overall.json").read_text())
    for suite in ("db", "fc"):
        rs = [r for r in lines if r["suite"] == suite]
        s = overall["suites"][suite]
        assert s["n"] == len(rs) == 5
        assert s["passed"] == sum(1 for r in rs if r["passed"])
        assert s["score"] == pytest.approx(sum(r["score"] for r in rs) / 5)
        assert s["ci95"][0] <= s["score"] <= s["ci95"][1]
    assert overall == json.loads(json.dumps(summary))
    md = (tmp_path / "report.md").read_text()
    assert "| db |" in md and "| fc |" in md and "95% CI" in md and "scores.png" in md
    for r in lines:
        assert f"| {r['suite']} | {r['id']} |" in md
    png = (tmp_path / "scores.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    # `report` recomputes the same numbers from runs.jsonl alone
    (tmp_path / "overall.json").unlink()
    again = write_report(tmp_path)
    assert again["suites"]["db"]["score"] == overall["suites"]["db"]["score"]


async def test_compare_wins_and_losses(ev, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    await ev.run_suite(make_suite("fc"), OracleFactory(), a, limit=4)
    ids = [r["id"] for r in ev.records(a)]

    def mixed(suite, sample):
        from glm_agent.models.scripted import ScriptedModel

        return ScriptedModel(["no call"]) if sample.id == ids[0] else OracleFactory()(suite, sample)

    await ev.run_suite(make_suite("fc"), mixed, b, limit=5)
    result = compare_runs(a, b)
    fc = result["suites"]["fc"]
    assert fc["common"] == 4 and fc["only_b"] == 1
    assert [r["id"] for r in fc["losses"]] == [ids[0]] if ids[0] != "irrelevance_0" else True
    text = render_comparison(result)
    assert "fc" in text and "losses" in text
    back = compare_runs(b, a)
    assert len(back["suites"]["fc"]["wins"]) == len(fc["losses"])


def test_select_samples_spreads_over_categories():
    suite = make_suite("fc")
    picked = select_samples(suite.samples(), 5)
    assert len({s.category for s in picked}) == 5
    assert select_samples(suite.samples(), None) == suite.samples()


# -- bad task files ----------------------------------------------------------------------------
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_bad_jsonl_names_file_and_line(tmp_path):
    good = (Path(__file__).parents[2] / "glm_agent/evals/data/db.jsonl").read_text().splitlines()[0]
    bad = _write(tmp_path / "db.jsonl", good + "\n" + good + "\n{not json\n")
    with pytest.raises(TaskFileError, match=r"db\.jsonl:3: invalid JSON"):
        make_suite("db", data=bad).samples()
    missing = _write(tmp_path / "db2.jsonl", good + '\n{"description": "x", "label": []}\n')
    with pytest.raises(TaskFileError, match=r"db2\.jsonl:2: missing field 'table'"):
        make_suite("db", data=missing).samples()


def test_bad_files_of_every_suite(tmp_path):
    with pytest.raises(TaskFileError, match=r"math\.jsonl:1: .*####"):
        make_suite("math", data=_write(tmp_path / "math.jsonl", '{"question": "q", "answer": "42"}\n')).samples()
    with pytest.raises(TaskFileError, match=r"fc\.jsonl:1: .*ground truth"):
        make_suite("fc", data=_write(tmp_path / "fc.jsonl",
                                     '{"id": "simple_0", "question": [[{"role": "user", "content": "q"}]], "function": [{"name": "f"}]}\n')).samples()
    with pytest.raises(TaskFileError, match=r"web\.jsonl:1: unknown constraint"):
        make_suite("web", data=_write(tmp_path / "web.jsonl",
                                      '{"id": "w", "instruction": "i", "constraints": {"size": "L"}, "goal": "any", "gold_ids": [101]}\n')).samples()
    os_file = _write(tmp_path / "os.json", '[\n  {"description": "ok", "evaluation": {"match": "1"}},\n'
                                           '  {"description": "no judge"}\n]\n')
    with pytest.raises(TaskFileError, match=r"os\.json:3: task 1: .*evaluation"):
        make_suite("os", data=os_file).samples()
    with pytest.raises(TaskFileError, match=r"broken\.json:1: invalid JSON"):
        make_suite("os", data=_write(tmp_path / "broken.json", '[{"description": "x",}]')).samples()
    with pytest.raises(TaskFileError, match="file not found"):
        make_suite("db", data=tmp_path / "nope.jsonl").samples()


def test_cli_run_report_compare(tmp_path):
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    res = runner.invoke(eval_app, ["run", "db", "fc", "--oracle", "--limit", "2", "--out", str(a), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "db" in res.output and "100.0" in res.output
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(["Final Answer: nothing"] * 10))
    res = runner.invoke(eval_app, ["run", "db", "fc", "--model", f"scripted:{turns}", "--limit", "2", "--out", str(b),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(eval_app, ["report", str(b)])
    assert res.exit_code == 0 and (b / "report.md").exists()
    res = runner.invoke(eval_app, ["compare", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "losses" in res.output and "wins" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    res = runner.invoke(eval_app, ["run", "db", "--oracle", "--data", str(bad), "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "bad.jsonl:1" in res.output
    res = runner.invoke(eval_app, ["run", "nosuch", "--oracle"])
    assert res.exit_code != 0 and "unknown suite" in res.output
    res = runner.invoke(eval_app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2


async def test_suite_that_cannot_start_fails_its_samples_only(ev, tmp_path):
    from glm_agent.evals.runner import run_eval

    class Broken(type(make_suite("fc"))):
        async def start(self):
            raise OSError("address already in use")

    summary = await run_eval([Broken(), make_suite("db")], OracleFactory(), tmp_path, limit=2, progress=False)
    assert summary["suites"]["fc"]["statuses"] == {"task_error": 2}
    assert summary["suites"]["db"]["score"] == 1.0
    assert all("could not start" in r["detail"] for r in ev.records(tmp_path) if r["suite"] == "fc")


class _TinySuite(Suite):
    """Three tasks: one needs the network (setup says unsupported), one has a gold answer broken
    upstream (the judge says unsupported), one runs and passes."""

    name = "tiny"

    def load(self):
        return [Sample(id=i, prompt=f"task {i}") for i in ("net", "broken", "ok")]

    async def setup(self, sample, workspace):
        if sample.id == "net":
            raise UnsupportedSample("needs network: apt-get install sudo")
        return SampleEnv(tools=[], prompt=sample.prompt, max_steps=2)

    async def judge(self, sample, env, result):
        if sample.id == "broken":
            return Judgement.unsupported("the gold SQL is broken upstream", gold="SELEC 1")
        return Judgement(1.0, detail="fine")


async def test_unsupported_is_its_own_status_out_of_the_score(ev, tmp_path):
    from glm_agent.models.scripted import ScriptedModel

    summary = await ev.run_suite(_TinySuite(), lambda suite, sample: ScriptedModel(["Answer: x"]), tmp_path)
    by_id = {r["id"]: r for r in ev.records(tmp_path)}
    assert {i: r["status"] for i, r in by_id.items()} == {"net": "unsupported", "broken": "unsupported", "ok": "completed"}
    assert by_id["net"]["messages"] == []  # the model never ran
    assert by_id["broken"]["messages"] and by_id["broken"]["judge"] == {"gold": "SELEC 1"}
    assert by_id["net"]["score"] is None and by_id["broken"]["score"] is None
    s = summary["suites"]["tiny"]
    assert (s["n"], s["judged"], s["score"], s["unsupported"]) == (3, 1, 1.0, 2)
    assert s["unsupported_reasons"] == {"needs network: apt-get install sudo": 1, "the gold SQL is broken upstream": 1}
    md = (tmp_path / "report.md").read_text()
    assert "### tiny: 2 unsupported (not in the score)" in md
    assert "| 1 | needs network: apt-get install sudo |" in md


def test_unsupported_judge_of_older_folders_counts_as_unsupported(tmp_path):
    from glm_agent.evals.record import EvalRecord

    old = EvalRecord(suite="os", id="a", status="unsupported_judge", detail="check script 'x' is not shipped")
    (tmp_path / "runs.jsonl").write_text(old.to_line() + "\n")
    s = write_report(tmp_path)["suites"]["os"]
    assert (s["judged"], s["unsupported"]) == (0, 1)
