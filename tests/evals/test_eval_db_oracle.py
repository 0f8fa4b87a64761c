"""The db suite's oracle runs the gold SQL, and a gold that cannot run is marked, not scored 0
(the SQLite backend; the same on MariaDB is in test_eval_db_mariadb.py)."""

from __future__ import annotations

import json
from pathlib import Path

from glm_agent.core.messages import ToolCall
from glm_agent.evals.oracle import OracleFactory
from glm_agent.evals.suites import make_suite

TABLE = {"table_name": "Club Players", "table_info": {
    "columns": [{"name": c, "type": "TEXT"} for c in ("Name", "Team", "Goals")],
    "rows": [["José Pérez", "River", "12"], ["Ana Gómez", "Boca", "7"], ["Zoë Ng", "River", "9"]]}}


def _write(path: Path, tasks: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"table": TABLE, **t}, ensure_ascii=False) + "\n" for t in tasks),
                    encoding="utf-8")
    return path


async def test_oracle_runs_select_gold_sql_instead_of_replaying_labels(ev, tmp_path):
    """Public tasks (no `id`) used to get their label replayed: now the gold SQL runs through the
    sql tool, and a label the gold SQL does not produce, or a gold SQL that fails, is unsupported."""
    data = _write(tmp_path / "t.jsonl", [
        {"description": "Who plays for River?", "label": ["José Pérez", "Zoë Ng"], "type": ["other"],
         "sql": {"query": "SELECT Name FROM `Club Players` WHERE Team = 'River'"}},
        {"description": "How many players?", "label": ["4"], "type": ["counting"],
         "sql": {"query": "SELECT COUNT(*) FROM `Club Players`"}},
        {"description": "Top scorer?", "label": ["José Pérez"], "type": ["ranking"],
         "sql": {"query": "SELECT Name FROM `Club Players` ORDER BY Goals DESCLIMIT 1"}},
        {"description": "Who plays for Boca?", "label": ["Ana Gómez"], "type": ["other"]},
    ])
    summary = await ev.run_suite(make_suite("db", data=data), OracleFactory(), tmp_path / "run")
    by_id = {r["id"]: r for r in ev.records(tmp_path / "run")}
    assert (by_id["t-1"]["status"], by_id["t-1"]["score"]) == ("completed", 1.0)
    messages = by_id["t-1"]["messages"]
    (call,) = [c for m in messages if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert call["name"] == "sql" and "WHERE Team = 'River'" in call["arguments"]["query"]
    assert "Zoë Ng" in next(m for m in messages if m["role"] == "tool")["content"]
    for sample_id, reason in (("t-2", "returns ['3'], the label is ['4']"), ("t-3", "fails on sqlite"),
                              ("t-4", "no gold SQL")):
        record = by_id[sample_id]
        assert (record["status"], record["score"]) == ("unsupported", None), record
        assert reason in record["detail"] and record["messages"] == []
    assert summary["suites"]["db"]["n"] == 4 and summary["suites"]["db"]["judged"] == 1


async def test_gold_statement_sqlite_cannot_run_is_unsupported_not_zero(ev, tmp_path):
    """A mutation whose gold statement is MySQL-only (INSERT ... SET) used to score 0 for every
    agent, the right one included; on SQLite the task is now unsupported with the reason."""
    data = _write(tmp_path / "t.jsonl", [
        {"description": "Add Lia Sousa, team River, 4 goals.", "type": ["INSERT"],
         "label": ["INSERT INTO `Club Players` SET Name = 'Lia Sousa', Team = 'River', Goals = '4'"]},
    ])
    insert = "INSERT INTO `Club Players` (Name, Team, Goals) VALUES ('Lia Sousa', 'River', '4')"
    agent = ev.per_sample(lambda su, sa: [ToolCall(name="sql", arguments={"query": insert}), "Final Answer: done"])
    await ev.run_suite(make_suite("db", data=data), agent, tmp_path / "run")
    (record,) = ev.records(tmp_path / "run")
    assert (record["status"], record["score"]) == ("unsupported", None), record
    assert "the gold statement fails on sqlite" in record["detail"]
