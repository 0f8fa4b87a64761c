"""Keep the db suite's `sql` tool on its one database (SQLite file or MariaDB database).

The tool runs the model's SQL on the host, not in the sandbox, so SQL must not reach other
files. SQLite can: `ATTACH '/any/path' AS x` creates or opens any file, `VACUUM INTO
'/any/path'` writes a copy anywhere (SQLite attaches its target, so the same check sees
it), `load_extension()` loads a shared library, and pragmas such as `temp_store_directory`,
`journal_mode` or `writable_schema` redirect files or break the database. `guard()` installs:

- an authorizer (`sqlite3.Connection.set_authorizer`, consulted while every statement is
  prepared, whatever its spelling: comments, case, computed file names, the
  `pragma_*()` table-valued functions) that denies ATTACH and DETACH (and so VACUUM),
  load_extension and other file or pointer functions, and every PRAGMA but schema
  introspection and reading a few settings;
- no attached databases at all (SQLITE_LIMIT_ATTACHED = 0, where Python has `setlimit`), in
  case a future SQLite attaches in a way the authorizer does not see;
- a size cap on the database (`PRAGMA max_page_count`): a statement cannot fill the disk.

On MariaDB the server enforces the confinement: the agent's statements run as a user created
for the task whose rights are `MARIADB_PRIVILEGES` on its own database only. Without global
privileges it cannot read or write host files (FILE: `LOAD_FILE`, `INTO OUTFILE/DUMPFILE`,
`LOAD DATA`), see or change other databases (the `mysql` system tables, other tasks), change
server settings (`SET GLOBAL`), manage users, install plugins or functions, or shut the server
down. No routines, triggers or events either (they would run outside the per-statement time
cap). The server itself refuses `LOAD DATA LOCAL` and confines file I/O to an empty folder
(mariadb.py), and the client refuses to send local files.
"""

from __future__ import annotations

import sqlite3

__all__ = ["guard", "DENIED_MESSAGE", "ALLOWED_PRAGMAS", "MARIADB_PRIVILEGES", "MARIADB_DENIED_MESSAGE",
           "mariadb_denied"]

DENIED_MESSAGE = (
    "not authorized: the sql tool works on the task's database only (ATTACH, DETACH, VACUUM, "
    "load_extension and PRAGMAs that change settings are disabled)"
)

# Schema introspection: any argument (a table or index name, a row limit) reads only.
_INTROSPECTION = {
    "table_info", "table_xinfo", "table_list", "index_list", "index_info", "index_xinfo",
    "foreign_key_list", "foreign_key_check", "integrity_check", "quick_check",
    "collation_list", "function_list", "module_list", "pragma_list",
}
# Settings that may be read (no argument) but not changed.
_READ_ONLY = {"encoding", "user_version", "application_id", "page_size", "page_count", "freelist_count",
              "foreign_keys", "auto_vacuum", "schema_version", "data_version"}
ALLOWED_PRAGMAS = frozenset(_INTROSPECTION | _READ_ONLY)

# Functions that touch files or raw pointers (the last three exist only in some builds).
_DENIED_FUNCTIONS = {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"}


def _authorizer(action: int, arg1: str | None, arg2: str | None, _db: str | None, _trigger: str | None) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_PRAGMA:
        name = (arg1 or "").lower()
        if name in _INTROSPECTION or (name in _READ_ONLY and arg2 is None):
            return sqlite3.SQLITE_OK
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and (arg2 or "").lower() in _DENIED_FUNCTIONS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def guard(conn: sqlite3.Connection, *, max_db_mb: int | None = 256) -> None:
    """Confine `conn` to its database (see the module docstring). Call it right after
    connecting: what runs before it is not checked."""
    if max_db_mb is not None:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {max(1, max_db_mb * 1024 * 1024 // page_size)}")
    if hasattr(conn, "setlimit"):  # Python >= 3.11
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.set_authorizer(_authorizer)


# -- MariaDB -----------------------------------------------------------------------------------
# Database-level rights only: ordinary SQL on the task's own tables.
MARIADB_PRIVILEGES = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "INDEX",
    "CREATE TEMPORARY TABLES", "CREATE VIEW", "SHOW VIEW",
)
MARIADB_DENIED_MESSAGE = (
    "The sql tool works on the task's database only: no other databases, host files, "
    "server settings, users or routines."
)
# Server errors that mean "not allowed": access denied to a database, table, column or routine,
# a missing global privilege, --secure-file-priv, LOAD DATA LOCAL disabled (MySQL's and MariaDB's
# numbers), killing another user's session.
_MARIADB_DENIED_CODES = frozenset({1044, 1045, 1142, 1143, 1227, 1370, 1290, 1148, 4166, 1095})


def mariadb_denied(code: int) -> bool:
    """Whether MariaDB error `code` means the task user's rights refused the statement."""
    return code in _MARIADB_DENIED_CODES
