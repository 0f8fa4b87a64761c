"""The db suite's quick default backend: one SQLite file per task in its workspace.

AgentBench runs DBBench on MySQL; SQLite needs no server but parses a different dialect and
compares text case- and accent-sensitively (`--db mariadb` is the faithful backend).
Mutations are judged by comparing the table's rows (as a multiset) with the gold statements
applied to a fresh copy, since SQLite has no md5 to replicate AgentBench's table hash.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool
from glm_agent.core.errors import GlmAgentError
from glm_agent.core.messages import ToolResult
from glm_agent.evals.suites.db_judge import normalize
from glm_agent.evals.suites.db_text import MAX_ROWS_SHOWN, SQLStatementTool, format_rows
from glm_agent.evals.suites.sqlguard import DENIED_MESSAGE, guard

__all__ = ["SQLTool", "SQLiteBackend", "SQLError", "create_database", "table_rows", "rows_match"]


class SQLError(GlmAgentError, RuntimeError):
    """A gold statement failed on the backend (the message is the database's own)."""


class SQLTool(SQLStatementTool):
    """Runs one SQLite statement on the sample's database; rows or the error come back as text.

    It runs on the host, so the statement is confined to that one file (sqlguard.py): no
    ATTACH, VACUUM INTO, extensions or setting-changing PRAGMAs, and at most `max_db_mb`.
    """

    dialect = "SQLite"
    timeout = 30.0

    def __init__(self, database: str | Path, *, statement_timeout: float = 10.0, max_db_mb: int | None = 256):
        self.database = Path(database)
        self.statement_timeout = statement_timeout
        self.max_db_mb = max_db_mb

    def _run(self, query: str) -> ToolResult:
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


def table_rows(path: str | Path, table_name: str) -> Counter:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(f"SELECT * FROM {_quote(table_name)}").fetchall()
    finally:
        conn.close()
    return Counter(tuple(normalize(v) if v is not None else "none" for v in r) for r in rows)


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


class SQLiteBackend:
    """The db suite's backend interface on SQLite files (see db.py for the interface)."""

    name = "sqlite"
    dialect = "SQLite"
    has_table_hash = False

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> None:
        """Nothing to stop."""

    def create(self, table: dict[str, Any], folder: Path, label: str = "task") -> Path:
        path = Path(folder) / f"{label}.db"
        path.unlink(missing_ok=True)
        try:
            create_database(path, table)
        except sqlite3.Error as exc:
            raise SQLError(str(exc)) from None
        return path

    def tool(self, handle: Path) -> Tool:
        return SQLTool(handle)

    def run(self, handle: Path, statement: str) -> tuple[list[str] | None, list[tuple]]:
        """Run a gold statement without the guard (gold data are trusted); `SQLError` if it fails."""
        conn = sqlite3.connect(handle)
        try:
            cur = conn.execute(statement)
            if cur.description is None:
                conn.commit()
                return None, []
            return [d[0] for d in cur.description], cur.fetchall()
        except (sqlite3.Error, ValueError) as exc:
            raise SQLError(str(exc)) from None
        finally:
            conn.close()

    def state(self, handle: Path, table: dict[str, Any]) -> Any:
        """The table's rows as a multiset of normalized values."""
        return table_rows(handle, table["table_name"])

    def compare(self, handle: Path, expected: Any, table: dict[str, Any]) -> tuple[bool, str]:
        try:
            got = self.state(handle, table)
        except sqlite3.Error as exc:
            return False, f"cannot read the table after the run: {exc}"
        if got == expected:
            return True, "table matches the gold statement's result"
        missing = sum((expected - got).values())
        extra = sum((got - expected).values())
        return False, f"table differs from the expected state: {missing} expected row(s) missing, {extra} unexpected"

    def drop(self, handle: Path) -> None:
        Path(handle).unlink(missing_ok=True)
