"""Run folders and task files a user can get wrong: resuming with another model or other
settings, damaged `runs.jsonl` lines, bad scores, empty or binary `--data`. Every case ends in
one line naming the file (and line or field), never a traceback, and no saved line is lost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from glm_agent.cli.eval import eval_app

SUITES_FOR_DATA = ("db", "os", "fc", "math", "web")


def cli(*args: str) -> tuple[int, str]:
    """Run `glm-agent eval ARGS`; an exception escaping the command fails the test."""
    res = CliRunner().invoke(eval_app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise AssertionError(f"traceback for {args}: {res.exception!r}\n{res.output}")
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def oracle_run(out: Path, *extra: str, suite: str = "db", limit: int = 3) -> str:
    code, output = cli("run", suite, "--model", "oracle", "--limit", limit, "--out", out, "--no-progress", *extra)
    assert code == 0, output
    return output


def lines(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "runs.jsonl").read_bytes().split(b"\n") if x.strip()]


def scripted(tmp_path: Path) -> str:
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(["Final Answer: nothing"] * 10))
    return f"scripted:{turns}"


# -- resuming only the same configuration ---------------------------------------------------------
def test_resume_with_another_model_or_settings_is_refused(tmp_path):
    out = tmp_path / "run"
    oracle_run(out)
    before = (out / "runs.jsonl").read_bytes(), (out / "config.json").read_bytes()
    other_data = tmp_path / "db.jsonl"
    other_data.write_text((Path(__file__).parents[2] / "glm_agent/evals/data/db.jsonl").read_text())
    cases = [
        (["--model", scripted(tmp_path)], "model 'oracle' -> 'scripted:"),
        (["--temperature", "0.7"], "temperature 0.0 -> 0.7"),
        (["--max-new-tokens", "64"], "max_new_tokens 1024 -> 64"),
        (["--seed", "5"], "seed 0 -> 5"),
        (["--max-steps", "2"], "max steps default -> 2"),
        (["--timeout", "30"], "timeout default -> 30.0"),
        (["--data", str(other_data)], "db tasks shipped -> "),
    ]
    for extra, why in cases:
        args = ["run", "db", "--model", "oracle", "--limit", "3", "--out", out, "--no-progress"]
        # a later --model wins over the first one
        code, output = cli(*args, *extra)
        assert code == 2, (extra, output)
        assert output.startswith("error: ") and output.count("\n") == 1, output
        assert why in output and str(out) in output and "another --out" in output, output
        # refused before anything was written
        assert ((out / "runs.jsonl").read_bytes(), (out / "config.json").read_bytes()) == before
    # The same configuration resumes; a larger limit and more concurrency only widen it.
    oracle_run(out, "-k", "2", limit=5)
    records = lines(out)
    assert len(records) == 5 and {r["model"] for r in records} == {"oracle"}
    assert all(r["passed"] for r in records)
    assert json.loads((out / "config.json").read_text())["resumed"] == 1


async def test_library_resume_is_refused_too(tmp_path):
    from glm_agent.core.errors import GlmAgentError
    from glm_agent.evals import make_suite, run_eval
    from glm_agent.evals.config import ResumeConflictError
    from glm_agent.evals.oracle import OracleFactory

    await run_eval([make_suite("fc")], OracleFactory(), tmp_path, limit=2, model_name="oracle", progress=False)
    with pytest.raises(ResumeConflictError, match="model 'oracle' -> 'other'") as info:
        await run_eval([make_suite("fc")], OracleFactory(), tmp_path, limit=2, model_name="other", progress=False)
    assert isinstance(info.value, GlmAgentError) and isinstance(info.value, ValueError)
    # Without config.json the records still say which model ran.
    (tmp_path / "config.json").unlink()
    with pytest.raises(ResumeConflictError, match="model 'oracle'"):
        await run_eval([make_suite("fc")], OracleFactory(), tmp_path, limit=2, model_name="other", progress=False)


# Lines exactly as the runner wrote them before `EvalRecord` (they must keep loading).
def _old_record(sample_id: str, model: str, score: float) -> str:
    return json.dumps({
        "suite": "db", "id": sample_id, "category": "SELECT", "model": model, "seed": 1, "status": "completed",
        "score": score, "passed": score == 1.0, "detail": "", "judge": {}, "output": "Final Answer: []",
        "error": None, "steps": 2, "prompt_tokens": 10, "completion_tokens": 3, "tool_calls": 1,
        "invalid_calls": 0, "seconds": 0.5, "prompt": "q", "system": "s",
        "messages": [{"role": "user", "content": "q"}],
    })


def _old_config(model: str) -> str:
    return json.dumps({"model": model, "suites": ["db"], "data": {"db": None}, "limit": 3, "concurrency": 1,
                       "seed": 0, "timeout": None, "max_steps": None})


def test_folder_of_the_previous_format_loads_and_resumes(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    (out / "runs.jsonl").write_text(_old_record("db-01", "oracle", 1.0) + "\n")
    (out / "config.json").write_text(_old_config("oracle"))
    code, output = cli("report", out)
    assert code == 0 and "warning" not in output, output
    assert json.loads((out / "overall.json").read_text())["suites"]["db"]["n"] == 1
    code, output = cli("run", "db", "--model", scripted(tmp_path), "--limit", "3", "--out", out, "--no-progress")
    assert code == 2 and "model 'oracle' -> 'scripted:" in output
    oracle_run(out, limit=3)  # same model: resumes (the old config recorded no generation settings)
    assert [r["id"] for r in lines(out)][0] == "db-01" and len(lines(out)) == 3


def test_folder_mixing_models_is_reported_as_such(tmp_path):
    """A folder written before resuming was restricted: its report must not pass the merged
    score off as one model's."""
    out = tmp_path / "mixed"
    out.mkdir()
    rows = [_old_record(f"db-0{i}", "oracle", 1.0) for i in (1, 2, 3)]
    rows += [_old_record(f"db-0{i}", "scripted:x.json", 0.0) for i in (4, 5, 6)]
    (out / "runs.jsonl").write_text("\n".join(rows) + "\n")
    (out / "config.json").write_text(_old_config("scripted:x.json"))
    code, output = cli("report", out)
    assert code == 0, output
    assert "warning:" in output and "mix models" in output and "'oracle' (3 samples)" in output
    assert "'scripted:x.json' (3 samples)" in output
    report = (out / "report.md").read_text()
    assert "`oracle`" in report and "`scripted:x.json`" in report and "mix models" in report
    assert json.loads((out / "overall.json").read_text())["models"] == {"oracle": 3, "scripted:x.json": 3}
    code, output = cli("compare", out, out)
    assert code == 0 and "warning:" in output and "mix models" in output, output
    for model in ("oracle", "scripted:x.json"):  # resuming it with either model would merge more
        code, output = cli("run", "db", "--model", model, "--out", out, "--no-progress")
        assert code == 2 and "model " in output, output


# -- damaged runs.jsonl -------------------------------------------------------------------------
GARBAGE = [
    (b"{}", "missing field 'suite'"),
    (b"5", "expected a JSON object, got int"),
    (b'"text"', "expected a JSON object, got str"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b"null", "expected a JSON object"),
    (b"\xff\xfe{\"suite\": \"db\"}", "not UTF-8 text"),
    (b"{not json", "invalid JSON"),
    (b'{"suite": "db", "id": "db-02", "status": "completed", "score": "high"}', "field 'score'"),
    (b'{"suite": "db", "id": "db-02", "status": "completed", "score": NaN}', "field 'score'"),
    (b'{"suite": "db", "id": "db-02", "status": "completed", "score": 7}', "field 'score'"),
    (b'{"suite": "db", "id": "db-02", "status": "completed", "steps": -1}', "field 'steps'"),
    (b'{"suite": "db", "id": "db-02", "status": "finished"}', "field 'status'"),
    (b'{"suite": "db", "status": "completed"}', "missing field 'id'"),
]


def _damage(out: Path) -> tuple[bytes, int]:
    """Append every kind of garbage line and a torn last line; (bytes before, first bad line)."""
    path = out / "runs.jsonl"
    raw = path.read_bytes()
    first = raw.count(b"\n") + 1
    path.write_bytes(raw + b"\n".join(g for g, _ in GARBAGE) + b'\n{"suite": "db", "id": "to')
    return path.read_bytes(), first


def _assert_warned(output: str, out: Path, first: int) -> None:
    for n, (_, why) in enumerate(GARBAGE):
        line = next((x for x in output.splitlines() if f"runs.jsonl:{first + n}:" in x), None)
        assert line is not None and line.startswith("warning: ") and why in line, (n, why, output)
    assert f"runs.jsonl:{first + len(GARBAGE)}: skipped, cut off" in output


def test_damaged_lines_are_named_and_the_folder_still_resumes(tmp_path):
    out = tmp_path / "run"
    oracle_run(out, limit=2)
    saved, first = _damage(out)
    code, output = cli("report", out)
    assert code == 0, output
    _assert_warned(output, out, first)
    assert "runs.jsonl:" in (out / "report.md").read_text()  # the report says so too
    assert (out / "runs.jsonl").read_bytes() == saved  # reading never rewrites the file

    output = oracle_run(out, limit=4)  # resume: warns, runs the missing samples, keeps every line
    _assert_warned(output, out, first)
    raw = (out / "runs.jsonl").read_bytes()
    assert raw.startswith(saved + b"\n")  # the torn line is kept; new records start a line of their own
    from glm_agent.evals.runs import read_runs

    log = read_runs(out)
    assert len(log.records) == 4 and len({r.id for r in log.records}) == 4
    assert len(log.skipped) == len(GARBAGE) + 1
    summary = json.loads((out / "overall.json").read_text())
    assert summary["suites"]["db"]["n"] == 4 and summary["suites"]["db"]["score"] == 1.0

    other = tmp_path / "other"
    oracle_run(other, limit=4)
    code, output = cli("compare", other, out)
    assert code == 0 and "runs.jsonl:" in output and "warning: " in output, output


def test_non_numeric_score_does_not_crash_the_report(tmp_path):
    out = tmp_path / "run"
    oracle_run(out, limit=2)
    rows = lines(out)
    rows[0]["score"] = "0.5x"
    rows[1]["score"] = None  # unjudged: fine
    (out / "runs.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    code, output = cli("report", out)
    assert code == 0, output
    assert "runs.jsonl:1: skipped, not an eval record: field 'score'" in output
    assert json.loads((out / "overall.json").read_text())["suites"]["db"]["judged"] == 0
    code, output = cli("compare", out, out)
    assert code == 0 and "runs.jsonl:1" in output


# -- bad folders and task files -------------------------------------------------------------------
def test_bad_run_folders_get_one_line(tmp_path):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    jsonl_dir = tmp_path / "jsonl_dir"
    (jsonl_dir / "runs.jsonl").mkdir(parents=True)
    cases = [
        (("report", tmp_path / "missing"), "no such folder"),
        (("report", a_file), "is a file"),
        (("report", empty), "has no runs.jsonl"),
        (("report", jsonl_dir), "cannot be read"),
        (("compare", empty, jsonl_dir), "has no runs.jsonl"),
        (("run", "db", "--oracle", "--out", a_file, "--no-progress"), "is a file"),
    ]
    for args, why in cases:
        code, output = cli(*args)
        assert code == 2 and output.startswith("error: ") and output.count("\n") == 1, (args, output)
        assert why in output, (args, output)


def test_damaged_config_blocks_resume_but_not_report(tmp_path):
    out = tmp_path / "run"
    oracle_run(out, limit=1)
    for text, why in ((b"{oops", "config.json: line 1: invalid JSON"), (b"[1]", "expected a JSON object"),
                      (b'{"seed": "zero"}', "field 'seed'"), (b"\xff", "not UTF-8")):
        (out / "config.json").write_bytes(text)
        code, output = cli("run", "db", "--oracle", "--out", out, "--no-progress")
        assert code == 2 and why in output and "fix or delete" in output, output
        code, output = cli("report", out)
        assert code == 0 and "warning: " in output and why in output, output


@pytest.mark.parametrize("suite", SUITES_FOR_DATA)
def test_empty_binary_or_folder_data(tmp_path, suite):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    blank = tmp_path / "blank.json"
    blank.write_bytes(b"\n  \n")
    binary = tmp_path / "data.bin"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    for data, why in ((empty, "empty.jsonl"), (blank, "blank.json"), (binary, "data.bin"), (folder, "folder")):
        code, output = cli("run", suite, "--oracle", "--data", data, "--out", tmp_path / "out", "--no-progress")
        assert code == 2 and output.startswith(f"error: {data}") and output.count("\n") == 1, output
        assert why in output
    assert "not UTF-8" in cli("run", suite, "--oracle", "--data", binary, "--out", tmp_path / "o")[1]
    assert not (tmp_path / "out").exists()


def test_cli_process_prints_no_traceback(tmp_path):
    """The same through a real process: stderr holds one line, not a traceback."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "runs.jsonl").write_bytes(b"5\n\xff\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    for args, code in ((["report", str(out)], 0), (["run", "db", "--oracle", "--data", str(empty)], 2)):
        main = "from glm_agent.cli.eval import eval_app; eval_app(prog_name='glm-agent eval')"
        proc = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), proc.stderr
        assert all(line.startswith(("warning: ", "error: ")) for line in proc.stderr.splitlines()), proc.stderr


# -- statuses and scores --------------------------------------------------------------------------
async def test_empty_reply_is_judged_and_fails(ev, tmp_path):
    from glm_agent.core.events import ModelDone
    from glm_agent.evals.suites import make_suite

    class Silent:
        name = "silent"

        async def stream(self, messages, tools, settings=None):
            yield ModelDone()

        async def aclose(self):
            pass

    await ev.run_suite(make_suite("db"), Silent(), tmp_path, limit=1)
    (r,) = ev.records(tmp_path)
    assert r["status"] == "completed" and r["score"] == 0.0 and r["passed"] is False


async def test_out_of_range_judgement_is_a_judge_failure(ev, tmp_path):
    from glm_agent.evals.oracle import OracleFactory
    from glm_agent.evals.suites import suite_class
    from glm_agent.evals.task import Judgement

    class Generous(suite_class("db")):
        async def judge(self, sample, env, result):
            return Judgement(2.0)

    summary = await ev.run_suite(Generous(), OracleFactory(), tmp_path, limit=1)
    (r,) = ev.records(tmp_path)
    assert r["score"] == 0.0 and "judge failed" in r["detail"] and "[0, 1]" in r["detail"]
    assert summary["suites"]["db"]["score"] == 0.0


def test_eval_modules_import_one_way():
    """No import cycle among the eval modules (runner -> report -> runs -> record, never back)."""
    import ast

    root = Path(__file__).parents[2] / "glm_agent" / "evals"
    graph: dict[str, set[str]] = {}
    for path in root.glob("*.py"):
        name = f"glm_agent.evals.{path.stem}" if path.stem != "__init__" else "glm_agent.evals"
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glm_agent.evals."):
                deps.add(".".join(node.module.split(".")[:3]))
        graph[name] = deps

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in graph.get(start, ()):
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    cycles = [m for m in graph if m != "glm_agent.evals" and reaches(m, m, {m})]
    assert not cycles, {m: graph[m] for m in cycles}
    assert "glm_agent.evals.runner" not in graph["glm_agent.evals.report"]


# -- os: --scripts for task files outside AgentBench's layout; --judge is part of the folder ------
def test_cli_scripts_option_and_judge_mode(ev, tmp_path):
    from glm_agent.sandbox.bwrap import bwrap_available

    if not bwrap_available():
        pytest.skip("bubblewrap cannot create namespaces here")
    base = ev.agentbench_os_layout(tmp_path / "ab")
    tasks = tmp_path / "mine" / "tasks.json"  # the task file alone, away from its scripts/1/
    tasks.parent.mkdir()
    tasks.write_bytes((base / "data" / "1" / "tasks.json").read_bytes())
    code, output = cli("run", "os", "--oracle", "--data", tasks, "--out", tmp_path / "a", "--no-progress")
    assert code == 0, output
    assert {r["status"] for r in lines(tmp_path / "a")} == {"unsupported"}
    assert all("--scripts" in r["detail"] for r in lines(tmp_path / "a"))
    assert "unsupported 2" in output
    oracle_run(tmp_path / "b", "--data", tasks, "--scripts", base / "scripts" / "1", suite="os")
    assert [(r["status"], r["score"]) for r in lines(tmp_path / "b")] == [("completed", 1.0)] * 2
    # The judge mode changes scores: resuming with another one is refused.
    code, output = cli("run", "os", "--oracle", "--data", tasks, "--scripts", base / "scripts" / "1",
                       "--judge", "lenient", "--out", tmp_path / "b", "--no-progress")
    assert code == 2 and "os judge 'agentbench' -> 'lenient'" in output
    code, output = cli("run", "os", "--oracle", "--judge", "loose", "--out", tmp_path / "c")
    assert code == 2 and "agentbench" in output
    code, output = cli("run", "os", "--oracle", "--scripts", tmp_path / "nowhere", "--out", tmp_path / "c")
    assert code == 2 and "--scripts needs a folder" in output
