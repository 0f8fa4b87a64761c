"""`db`: SQLite tasks in the AgentBench DBBench format, answered through a `sql` tool.

AgentBench runs these on MySQL in Docker; we port them to SQLite (one fresh database file per
sample in its workspace). Judging follows AgentBench: SELECT-type answers are compared as
lists (one value: float-or-string equality; several: set equality); INSERT/UPDATE are judged by
comparing the table's rows (as a multiset) with the gold statement applied to a fresh copy,
instead of replicating MySQL's md5 of the table.

Task line (AgentBench `dev.jsonl`): `description`, `label` (answer list, or the gold statement
for mutations), `table` {`table_name`, `table_info` {`columns` [{name, type}], `rows`}},
`type` [`other`|`counting`|...|`INSERT`|`UPDATE`], optional `add_description`. Our own tasks add
`id` and, for SELECT tasks, `sql` {`query`} (the oracle runs it).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
import sqlite3
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool, ToolContext
from glm_agent.core.messages import ToolCall, ToolResult
from glm_agent.evals.record import EvalRecord
from glm_agent.evals.suites.sqlguard import DENIED_MESSAGE, guard
from glm_agent.evals.task import Judgement, Sample, SampleEnv, Suite, TaskFileError, final_text, read_jsonl

__all__ = [
    "DBSuite",
    "SQLTool",
    "load_dbbench",
    "create_database",
    "parse_final_answer",
    "answers_match",
    "table_rows",
    "rows_match",
]

MAX_ROWS_SHOWN = 50
MAX_CHARS = 4000

SYSTEM = (
    "You are an agent that answers questions about a SQLite database by running SQL. "
    "Do not guess: always call the `sql` tool first, with one SQLite statement per call; it returns "
    "the result rows or the error. Quote table and column names that contain spaces or symbols with double quotes "
    "or backticks. When you know the answer, reply without calling a tool, ending with a line "
    '`Final Answer: ["value1", "value2", ...]` (a JSON list of the answer values). If the task '
    "asks you to change the table (INSERT/UPDATE), make the change with the `sql` tool and then "
    "reply `Final Answer: done`."
)


class SQLTool(Tool):
    """Runs one SQLite statement on the sample's database; rows or the error come back as text.

    It runs on the host, so the statement is confined to that one file (sqlguard.py): no
    ATTACH, VACUUM INTO, extensions or setting-changing PRAGMAs, and at most `max_db_mb`.
    """

    name = "sql"
    description = (
        "Execute one SQLite statement on the task's database and return the result rows "
        "(or the number of changed rows, or the error message)."
    )
    parameters = {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "One SQLite statement."}},
        "required": ["query"],
    }
    timeout = 30.0

    def __init__(self, database: str | Path, *, statement_timeout: float = 10.0, max_db_mb: int | None = 256):
        self.database = Path(database)
        self.statement_timeout = statement_timeout
        self.max_db_mb = max_db_mb

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        query = str(arguments.get("query") or arguments.get("sql") or "").strip()
        query = _strip_fence(query)
        if not query:
            return ToolResult(content="Error: empty query. Pass one SQLite statement as `query`.", is_error=True)
        return await asyncio.to_thread(self._run, query)

    def _run(self, query: str) -> ToolResult:
        import time

        conn = sqlite3.connect(self.database)
        guard(conn, max_db_mb=self.max_db_mb)
        deadline = time.monotonic() + self.statement_timeout
        # A runaway query (cartesian join) is interrupted instead of hanging the sample.
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        try:
            cur = conn.execute(query)
            if cur.description is None:
                conn.commit()
                return ToolResult(content=f"OK, {cur.rowcount if cur.rowcount >= 0 else 0} row(s) affected.")
            columns = [d[0] for d in cur.description]
            rows = cur.fetchmany(MAX_ROWS_SHOWN + 1)
            return ToolResult(content=format_rows(columns, rows))
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if msg == "interrupted":
                msg = f"the statement ran longer than {self.statement_timeout:g} s and was stopped"
            elif _denied(msg):
                msg = DENIED_MESSAGE
            elif msg == "database or disk is full":
                msg = f"the database is full (it may hold at most {self.max_db_mb} MiB, or the disk is full)"
            return ToolResult(content=f"Error: {msg}", is_error=True)
        except (sqlite3.Error, ValueError) as exc:
            if _denied(str(exc)):
                return ToolResult(content=f"Error: {DENIED_MESSAGE}", is_error=True)
            hint = " Run one statement per call." if "one statement" in str(exc) else ""
            return ToolResult(content=f"Error: {exc}.{hint}", is_error=True)
        finally:
            conn.close()


def _denied(message: str) -> bool:
    """Whether SQLite refused the statement because of the guard (sqlguard.py)."""
    return message.startswith(("not authorized", "authorization denied", "too many attached databases"))


def format_rows(columns: list[str], rows: list[tuple]) -> str:
    more = len(rows) > MAX_ROWS_SHOWN
    rows = rows[:MAX_ROWS_SHOWN]
    lines = ["columns: " + json.dumps(columns, ensure_ascii=False)]
    lines += [json.dumps(list(r), ensure_ascii=False, default=str) for r in rows]
    if not rows:
        lines.append("(no rows)")
    if more:
        lines.append(f"(only the first {MAX_ROWS_SHOWN} rows are shown)")
    text = "\n".join(lines)
    if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS] + "\n(output truncated)"
    return text


def _strip_fence(query: str) -> str:
    m = re.match(r"^```(?:sql|sqlite)?\s*\n?(.*?)\n?```$", query, re.S | re.I)
    return m.group(1).strip() if m else query


# -- data --------------------------------------------------------------------------------------
def _quote(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def create_database(path: str | Path, table: dict[str, Any]) -> None:
    """Create `path` holding the task's one table (declared types kept; AgentBench uses TEXT)."""
    name = table["table_name"]
    columns = table["table_info"]["columns"]
    rows = table["table_info"]["rows"]
    names = [c["name"] for c in columns]
    if len(set(names)) != len(names):
        raise ValueError(f"table {name!r} has duplicate column names: {names}")
    cols = ", ".join(f"{_quote(c['name'])} {c.get('type') or 'TEXT'}" for c in columns)
    conn = sqlite3.connect(path)
    try:
        conn.execute(f"CREATE TABLE {_quote(name)} ({cols})")
        marks = ", ".join("?" for _ in columns)
        for i, row in enumerate(rows):
            if len(row) != len(columns):
                raise ValueError(f"table {name!r} row {i} has {len(row)} values for {len(columns)} columns")
        conn.executemany(f"INSERT INTO {_quote(name)} VALUES ({marks})", rows)
        conn.commit()
    finally:
        conn.close()


def _category(kind: str) -> str:
    kind = kind.upper()
    return kind if kind in ("INSERT", "UPDATE", "DELETE") else "SELECT"


def load_dbbench(path: str | Path, *, prefix: str | None = None) -> list[Sample]:
    """Samples from an AgentBench DBBench JSONL file (dev.jsonl / standard.jsonl or ours)."""
    path = Path(path)
    prefix = prefix or path.stem
    samples = []
    for lineno, obj in read_jsonl(path):
        for key in ("description", "label", "table"):
            if key not in obj:
                raise TaskFileError(path, lineno, f"missing field {key!r}")
        table = obj["table"]
        info = table.get("table_info") if isinstance(table, dict) else None
        if not isinstance(info, dict) or "table_name" not in table or "columns" not in info or "rows" not in info:
            raise TaskFileError(path, lineno, "field 'table' needs table_name and table_info.columns/rows")
        if not isinstance(obj["label"], list):
            raise TaskFileError(path, lineno, "field 'label' must be a list")
        kinds = obj.get("type") or ["other"]
        kind = kinds[0] if isinstance(kinds, list) else str(kinds)
        category = _category(kind)
        prompt = obj["description"].strip()
        if obj.get("add_description"):
            prompt += "\n" + obj["add_description"].strip()
        else:
            heads = ", ".join(c["name"] for c in info["columns"])
            prompt += f"\nThe name of this table is {table['table_name']}, and the headers of this table are {heads}."
        sql = obj.get("sql", {})
        samples.append(
            Sample(
                id=str(obj.get("id") or f"{prefix}-{lineno}"),
                prompt=prompt,
                category=category,
                gold={
                    "table": table,
                    "label": obj["label"],
                    "type": kind,
                    "sql": sql.get("query") if isinstance(sql, dict) else sql,
                    "oracle_sql": bool(obj.get("id")),  # our own SELECT queries are known to run
                },
                source=f"{path}:{lineno}",
            )
        )
    return samples


# -- judging -----------------------------------------------------------------------------------
_NONE = {"", "none", "null", "nan", "[]"}


def parse_final_answer(text: str) -> list[str] | None:
    """The answer list after `Final Answer:` (JSON or Python list, else the bare text)."""
    m = list(re.finditer(r"final answer\s*[:：]\s*", text, re.I))
    tail = text[m[-1].end():] if m else text
    tail = tail.strip().strip("`").strip()
    if not tail:
        return None
    bracket = re.search(r"\[.*\]", tail, re.S)
    if bracket:
        for parse in (json.loads, ast.literal_eval):
            try:
                value = parse(bracket.group(0))
            except Exception:
                continue
            if isinstance(value, (list, tuple)):
                flat: list[str] = []
                for v in value:
                    flat.extend(str(x) for x in v) if isinstance(v, (list, tuple)) else flat.append(
                        "none" if v is None else str(v)
                    )
                return flat
    first = tail.splitlines()[0].strip().rstrip(".")
    return [first]


def _norm(value: Any) -> str:
    text = str(value).strip().strip("'\"").strip()
    if text.lower() in _NONE:
        return "none"
    try:
        number = float(text.replace(",", "")) if re.fullmatch(r"-?[\d,]*\.?\d+(e-?\d+)?", text) else None
    except ValueError:
        number = None
    if number is not None:
        return repr(round(number, 6))
    return text.lower()


def answers_match(answer: list[str] | None, label: list[Any]) -> bool:
    """AgentBench's rule: one value compares as float or string, several as a set."""
    if answer is None:
        return False
    ans = [a for a in (_norm(a) for a in answer)]
    gold = [_norm(g) for g in label]
    ans = [a for a in ans if a != "none"] or ["none"]
    gold = [g for g in gold if g != "none"] or ["none"]
    if len(ans) == 1 and len(gold) == 1:
        return ans[0] == gold[0] or _close(answer[0], label[0])
    return set(ans) == set(gold)


def _close(answer: Any, label: Any) -> bool:
    """Numbers agree to the label's precision (a label "64666.67" accepts 64666.6667)."""
    a, b = str(answer).strip().replace(",", ""), str(label).strip().replace(",", "")
    try:
        x, y = float(a), float(b)
    except ValueError:
        return False
    decimals = len(b.split(".")[1]) if "." in b else 0
    return abs(x - y) <= 1e-6 * max(1.0, abs(y)) or (decimals > 0 and round(x, decimals) == y)


def table_rows(path: str | Path, table_name: str) -> Counter:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"SELECT * FROM {_quote(table_name)}").fetchall()
    finally:
        conn.close()
    return Counter(tuple(_norm(v) if v is not None else "none" for v in r) for r in rows)


def rows_match(agent_db: str | Path, gold_db: str | Path, table_name: str) -> tuple[bool, str]:
    try:
        got = table_rows(agent_db, table_name)
    except sqlite3.Error as exc:
        return False, f"cannot read the table after the run: {exc}"
    want = table_rows(gold_db, table_name)
    if got == want:
        return True, "table matches the gold statement's result"
    missing = sum((want - got).values())
    extra = sum((got - want).values())
    return False, f"table differs from the expected state: {missing} expected row(s) missing, {extra} unexpected"


class DBSuite(Suite):
    name = "db"
    description = "SQLite questions and edits (AgentBench DBBench format) through a `sql` tool"
    max_steps = 15  # AgentBench's max_round
    sample_timeout = 300.0

    def load(self) -> list[Sample]:
        if self.data:
            return load_dbbench(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "db.jsonl") as path:
            return load_dbbench(path, prefix="db")

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        db = workspace / "task.db"
        create_database(db, sample.gold["table"])
        return SampleEnv(
            tools=[SQLTool(db)],
            system=SYSTEM,
            prompt=sample.prompt,
            max_steps=self.max_steps,
            state={"db": str(db), "workspace": str(workspace)},
        )

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        gold = sample.gold
        if sample.category == "SELECT":
            answer = parse_final_answer(final_text(result))
            ok = answers_match(answer, gold["label"])
            return Judgement(float(ok), detail=f"answer {answer!r} vs label {gold['label']!r}",
                             info={"answer": answer})
        fresh = Path(env.state["workspace"]) / "gold.db"
        fresh.unlink(missing_ok=True)
        create_database(fresh, gold["table"])
        conn = sqlite3.connect(fresh)
        try:
            for statement in gold["label"]:
                conn.execute(statement)
            conn.commit()
        finally:
            conn.close()
        ok, detail = rows_match(env.state["db"], fresh, gold["table"]["table_name"])
        return Judgement(float(ok), detail=detail)

    def oracle(self, sample: Sample) -> list[Any]:
        gold = sample.gold
        if sample.category != "SELECT":
            return [ToolCall(name="sql", arguments={"query": s}) for s in gold["label"]] + ["Final Answer: done"]
        if not (gold.get("sql") and gold.get("oracle_sql")):
            # Public tasks' gold SQL is often MySQL-only or malformed: replay the label.
            return ["Final Answer: " + json.dumps([str(v) for v in gold["label"]], ensure_ascii=False)]

        def answer_from_rows(messages: list[Any]) -> str:
            obs = messages[-1].content
            values = []
            for line in obs.splitlines()[1:]:
                if line.startswith("["):
                    values.extend(json.loads(line))
            return "Final Answer: " + json.dumps([str(v) for v in values] or ["none"], ensure_ascii=False)

        return [ToolCall(name="sql", arguments={"query": gold["sql"]}), answer_from_rows]

    def aggregate(self, records: list[EvalRecord]) -> dict[str, Any]:
        summary = super().aggregate(records)
        cats = summary["per_category"]
        # AgentBench's headline for DB: the mean of the per-type accuracies.
        summary["overall_cat_accuracy"] = sum(c["score"] for c in cats.values()) / len(cats) if cats else 0.0
        return summary
