"""`db`: AgentBench DBBench tasks (one table, a question or an edit) through a `sql` tool.

Two backends (`--db`): `sqlite` (the quick default: one SQLite file per task, no server) and
`mariadb` (AgentBench's setting: a MySQL-compatible server the suite starts itself, one
database per task; see db_mariadb.py). SELECT-type answers are judged as AgentBench does
(db_judge.py); INSERT/UPDATE by the table's state after the run against the expected state:
on MariaDB AgentBench's table md5 against the task's `answer_md5` (or the gold statements
applied to a fresh copy), on SQLite the rows against the gold statements applied.

A backend offers `start()`, `stop()`, `create(table, folder) -> handle`, `tool(handle)`,
`run(handle, statement) -> (columns, rows)` (raising `SQLError`), `state(handle, table)`,
`compare(handle, expected, table) -> (ok, detail)` and `drop(handle)`; all synchronous.

The oracle runs the gold SQL (SELECT tasks too) through the `sql` tool. A task whose gold does
not run on the backend, or whose gold result disagrees with its label or `answer_md5`, is
broken upstream: the oracle marks it unsupported with the reason instead of replaying a label.

Task line (AgentBench `dev.jsonl` / `standard.jsonl`): `description`, `label` (answer list, or
the gold statements for mutations), `table` {`table_name`, `table_info` {`columns` [{name,
type}], `rows`}}, `type` [`other`|`counting`|...|`INSERT`|`UPDATE`], optional
`add_description`, `sql` {`query`} (the gold SELECT), `answer_md5` (MySQL's table hash after a
mutation). Our own tasks add `id`.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from glm_agent.core.messages import ToolCall
from glm_agent.evals.record import EvalRecord
from glm_agent.evals.suites.db_judge import answers_match, parse_final_answer, rows_answer
from glm_agent.evals.suites.db_sqlite import SQLError, SQLiteBackend, SQLTool, create_database, rows_match, table_rows
from glm_agent.evals.suites.db_text import format_rows
from glm_agent.evals.task import (
    Judgement,
    Sample,
    SampleEnv,
    Suite,
    TaskFileError,
    UnsupportedSample,
    final_text,
    read_jsonl,
)

__all__ = [
    "BACKENDS",
    "DBSuite",
    "SQLTool",
    "load_dbbench",
    "create_database",
    "parse_final_answer",
    "answers_match",
    "table_rows",
    "rows_match",
    "format_rows",
    "system_prompt",
]

BACKENDS = ("sqlite", "mariadb")
MUTATIONS = ("INSERT", "UPDATE", "DELETE")


def system_prompt(dialect: str) -> str:
    return (
        f"You are an agent that answers questions about a {dialect} database by running SQL. "
        f"Do not guess: always call the `sql` tool first, with one {dialect} statement per call; it returns "
        "the result rows or the error. Quote table and column names that contain spaces or symbols with "
        + ("backticks. " if dialect == "MySQL" else "double quotes or backticks. ")
        + "When you know the answer, reply without calling a tool, ending with a line "
        '`Final Answer: ["value1", "value2", ...]` (a JSON list of the answer values). If the task '
        "asks you to change the table (INSERT/UPDATE), make the change with the `sql` tool and then "
        "reply `Final Answer: done`."
    )


SYSTEM = system_prompt("SQLite")


# -- data --------------------------------------------------------------------------------------
def _category(kind: str) -> str:
    kind = kind.upper()
    return kind if kind in MUTATIONS else "SELECT"


def _md5(value: Any) -> str | None:
    """The hash in AgentBench's `answer_md5` ("[('<md5>',)]", MySQL's printed result)."""
    m = re.search(r"\b[0-9a-f]{32}\b", str(value or ""))
    return m.group(0) if m else None


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
                    "answer_md5": _md5(obj.get("answer_md5")) if category != "SELECT" else None,
                },
                source=f"{path}:{lineno}",
            )
        )
    return samples


# -- the suite ---------------------------------------------------------------------------------
class DBSuite(Suite):
    name = "db"
    description = "questions and edits on one table (AgentBench DBBench format) through a `sql` tool"
    max_steps = 15  # AgentBench's max_round
    sample_timeout = 300.0

    def __init__(self, data: str | Path | None = None, *, db: str = "sqlite", server: Any = None, **options: Any):
        """`db`: the backend, `sqlite` or `mariadb`; `server`: a running `MariaDBServer` to use
        (it is then not stopped at the end)."""
        super().__init__(data, db=db, **options)
        if db not in BACKENDS:
            raise ValueError(f"unknown db backend {db!r}: choose one of {', '.join(BACKENDS)}")
        if db == "mariadb":
            from glm_agent.evals.suites.db_mariadb import MariaDBBackend

            self.backend: Any = MariaDBBackend(server)
        else:
            self.backend = SQLiteBackend()

    def settings(self) -> dict[str, Any]:
        return {"db": self.backend.name}

    def load(self) -> list[Sample]:
        if self.data:
            return load_dbbench(self.data)
        with resources.as_file(resources.files("glm_agent.evals") / "data" / "db.jsonl") as path:
            return load_dbbench(path, prefix="db")

    async def start(self) -> None:
        # In this thread, so Ctrl-C during the start still stops the half-started server.
        self.backend.start()

    async def aclose(self) -> None:
        self.backend.stop()

    async def setup(self, sample: Sample, workspace: Path) -> SampleEnv:
        backend, table = self.backend, sample.gold["table"]
        expected = None
        if sample.category in MUTATIONS:
            expected = await asyncio.to_thread(self._expected_state, sample, workspace)
        try:
            handle = await asyncio.to_thread(backend.create, table, workspace)
        except SQLError as exc:
            raise UnsupportedSample(f"the task's table cannot be created on {backend.name}: {exc}") from None
        return SampleEnv(
            tools=[backend.tool(handle)],
            system=system_prompt(backend.dialect),
            prompt=sample.prompt,
            max_steps=self.max_steps,
            state={"handle": handle, "expected": expected, "workspace": str(workspace)},
            cleanups=[lambda: asyncio.to_thread(backend.drop, handle)],
        )

    def _expected_state(self, sample: Sample, folder: Path) -> Any:
        """The table's state a mutation task expects: the task's `answer_md5` where the backend
        computes that hash, else the gold statements applied to a fresh copy."""
        gold = sample.gold
        if self.backend.has_table_hash and gold.get("answer_md5"):
            return gold["answer_md5"]
        state, problem = self._apply_gold(sample, folder)
        if problem:
            raise UnsupportedSample(problem)
        return state

    def _apply_gold(self, sample: Sample, folder: Path) -> tuple[Any, str | None]:
        """(state after the gold statements, None), or (None, why they cannot run here)."""
        backend, table = self.backend, sample.gold["table"]
        try:
            handle = backend.create(table, folder, "gold")
        except SQLError as exc:
            return None, f"the task's table cannot be created on {backend.name}: {exc}"
        try:
            for statement in sample.gold["label"]:
                backend.run(handle, statement)
            return backend.state(handle, table), None
        except SQLError as exc:
            return None, f"the gold statement fails on {backend.name}: {exc}"
        finally:
            backend.drop(handle)

    async def judge(self, sample: Sample, env: SampleEnv, result: Any) -> Judgement:
        gold = sample.gold
        if sample.category not in MUTATIONS:
            answer = parse_final_answer(final_text(result))
            ok = answers_match(answer, gold["label"])
            return Judgement(float(ok), detail=f"answer {answer!r} vs label {gold['label']!r}",
                             info={"answer": answer})
        ok, detail = await asyncio.to_thread(
            self.backend.compare, env.state["handle"], env.state["expected"], gold["table"])
        return Judgement(float(ok), detail=detail)

    # -- oracle ----------------------------------------------------------------------------
    def gold_problem(self, sample: Sample) -> str | None:
        """Why the task's gold cannot be replayed on this backend (its SQL fails, or its result
        disagrees with the label / `answer_md5`), or None. Needs a started backend."""
        gold = sample.gold
        with tempfile.TemporaryDirectory(prefix="glm-agent-db-gold-") as folder:
            if sample.category in MUTATIONS:
                state, problem = self._apply_gold(sample, Path(folder))
                if problem:
                    return problem
                md5 = gold.get("answer_md5")
                if self.backend.has_table_hash and md5 and state != md5:
                    return f"the gold statement leaves table hash {state}, the task's answer_md5 is {md5}"
                return None
            if not gold.get("sql"):
                return "the task has no gold SQL to run"
            backend = self.backend
            try:
                handle = backend.create(gold["table"], Path(folder), "gold")
            except SQLError as exc:
                return f"the task's table cannot be created on {backend.name}: {exc}"
            try:
                _, rows = backend.run(handle, gold["sql"])
            except SQLError as exc:
                return f"the gold SQL fails on {backend.name}: {exc}"
            finally:
                backend.drop(handle)
            values = rows_answer(rows)
            if not answers_match(values, gold["label"]):
                return f"the gold SQL returns {_short(values)}, the label is {_short(gold['label'])}"
            return None

    def oracle(self, sample: Sample) -> list[Any]:
        problem = self.gold_problem(sample)
        if problem:
            # MariaDB stands for AgentBench's MySQL; SQLite may just not speak the gold's dialect.
            where = "gold data broken upstream" if self.backend.name == "mariadb" else "no gold that runs on sqlite"
            raise UnsupportedSample(f"{where}: {problem}")
        gold = sample.gold
        if sample.category in MUTATIONS:
            return [ToolCall(name="sql", arguments={"query": s}) for s in gold["label"]] + ["Final Answer: done"]
        return [ToolCall(name="sql", arguments={"query": gold["sql"]}), _answer_from_rows]

    def aggregate(self, records: list[EvalRecord]) -> dict[str, Any]:
        summary = super().aggregate(records)
        cats = summary["per_category"]
        # AgentBench's headline for DB: the mean of the per-type accuracies.
        summary["overall_cat_accuracy"] = sum(c["score"] for c in cats.values()) / len(cats) if cats else 0.0
        return summary


def _answer_from_rows(messages: list[Any]) -> str:
    """The oracle's answer: the values of the rows the gold SQL returned (the tool's output)."""
    values: list[Any] = []
    for line in str(messages[-1].content).splitlines()[1:]:
        if line.startswith("["):
            try:
                values.extend(json.loads(line))
            except json.JSONDecodeError:  # a row cut by the output limit
                break
    return "Final Answer: " + json.dumps([str(v) for v in values] or ["none"], ensure_ascii=False)


def _short(values: list[Any], limit: int = 5) -> str:
    shown = ", ".join(repr(str(v)) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"
