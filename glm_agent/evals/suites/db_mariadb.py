"""The db suite on MariaDB, as AgentBench runs DBBench on MySQL (`--db mariadb`).

The suite starts one private server (mariadb.py) for the run; each task gets its own database
and user, dropped after. Mutations are judged as AgentBench judges them: the md5 of the
table's row hashes (`table_hash`) against the task's `answer_md5`, or, without one, against
the same hash of a fresh copy with the gold statements applied.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glm_agent.core.contracts import Tool
from glm_agent.core.messages import ToolResult
from glm_agent.evals.suites.db_sqlite import SQLError
from glm_agent.evals.suites.db_text import MAX_ROWS_SHOWN, SQLStatementTool, format_rows
from glm_agent.evals.suites.mariadb import MariaDBError, MariaDBServer, TaskDatabase, table_hash
from glm_agent.evals.suites.sqlguard import MARIADB_DENIED_MESSAGE, mariadb_denied

__all__ = ["MariaDBSQLTool", "MariaDBBackend"]

_TIMEOUT_CODES = {1969, 3024}  # max_statement_time exceeded (MariaDB; MySQL's number)


class MariaDBSQLTool(SQLStatementTool):
    """Runs one MySQL statement as the task's user on its own database (see sqlguard.py)."""

    dialect = "MySQL"
    timeout = 60.0

    def __init__(self, database: TaskDatabase, *, statement_timeout: float = 10.0):
        self.database = database
        self.statement_timeout = statement_timeout

    def _run(self, query: str) -> ToolResult:
        import pymysql

        try:
            columns, rows, affected = self.database.execute(query, timeout=self.statement_timeout,
                                                            max_rows=MAX_ROWS_SHOWN + 1)
        except MariaDBError as exc:
            return ToolResult(content=f"Error: {exc}", is_error=True)
        except pymysql.err.MySQLError as exc:
            if len(exc.args) >= 2 and isinstance(exc.args[0], int):
                code, message = exc.args[0], str(exc.args[1])
            else:
                code, message = None, str(exc)
            if code in _TIMEOUT_CODES:
                message = f"the statement ran longer than {self.statement_timeout:g} s and was stopped"
            elif code is not None and mariadb_denied(code):
                message = f"{message}. {MARIADB_DENIED_MESSAGE}"
            elif code == 1064 and ";" in query.rstrip().rstrip(";"):
                message += ". Run one statement per call."
            prefix = f"({code}) " if code is not None else ""
            return ToolResult(content=f"Error: {prefix}{message}", is_error=True)
        if columns is None:
            return ToolResult(content=f"OK, {max(affected, 0)} row(s) affected.")
        return ToolResult(content=format_rows(columns, rows))


class MariaDBBackend:
    """The db suite's backend interface on a private MariaDB server (see db.py).

    `server`: a running server to share (tests); without it `start` starts one and `stop`
    stops it.
    """

    name = "mariadb"
    dialect = "MySQL"
    has_table_hash = True

    def __init__(self, server: MariaDBServer | None = None, *, statement_timeout: float = 10.0):
        self._own = server is None
        self.server = server or MariaDBServer()
        self.statement_timeout = statement_timeout

    def start(self) -> None:
        if self._own:
            self.server.start()

    def stop(self) -> None:
        if self._own:
            self.server.stop()

    def create(self, table: dict[str, Any], folder: Path, label: str = "task") -> TaskDatabase:
        import pymysql

        try:
            return self.server.create_database(table)
        except pymysql.err.MySQLError as exc:
            raise SQLError(_message(exc)) from None

    def tool(self, handle: TaskDatabase) -> Tool:
        return MariaDBSQLTool(handle, statement_timeout=self.statement_timeout)

    def run(self, handle: TaskDatabase, statement: str) -> tuple[list[str] | None, list[tuple]]:
        """Run a gold statement as the task's user; `SQLError` if it fails."""
        import pymysql

        try:
            columns, rows, _ = handle.execute(statement, timeout=60.0)
        except pymysql.err.MySQLError as exc:
            raise SQLError(_message(exc, handle.name)) from None
        return columns, rows

    def state(self, handle: TaskDatabase, table: dict[str, Any]) -> str:
        return table_hash(handle, table)

    def compare(self, handle: TaskDatabase, expected: Any, table: dict[str, Any]) -> tuple[bool, str]:
        import pymysql

        try:
            got = self.state(handle, table)
        except pymysql.err.MySQLError as exc:
            return False, f"cannot read the table after the run: {_message(exc)}"
        if got == expected:
            return True, "table hash matches the expected state"
        return False, f"table hash {got or '(empty table)'} differs from the expected {expected}"

    def drop(self, handle: TaskDatabase) -> None:
        handle.drop()


_SYNTAX = "You have an error in your SQL syntax; check the manual that corresponds to your MariaDB server version for the right syntax to use near"


def _message(exc: Exception, database: str = "") -> str:
    """The server's error for a report line: short, without the task database's random name."""
    if len(exc.args) >= 2 and isinstance(exc.args[0], int):
        text = f"({exc.args[0]}) {exc.args[1]}".replace(_SYNTAX, "syntax error near")
    else:
        text = str(exc)
    return text.replace(f"{database}.", "") if database else text
