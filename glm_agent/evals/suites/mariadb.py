"""A private MariaDB server for the db suite, as AgentBench runs DBBench on MySQL.

`MariaDBServer` starts Debian's `mariadbd` itself: datadir, unix socket and logs in a private
0700 temporary folder, `skip-networking` (nothing listens on TCP), no `LOAD DATA LOCAL`, no
tables outside the datadir (`DATA DIRECTORY` is ignored: the server may run as root), file
import/export confined to an empty folder. The server's charset is utf8mb4 with the
accent- and case-insensitive Unicode collation (`utf8mb4_uca1400_ai_ci`, MariaDB's match for
MySQL 8's default `utf8mb4_0900_ai_ci`; `utf8mb4_unicode_520_ci` before MariaDB 10.10), so
`WHERE name = 'Jose'` finds 'José' as it does upstream, and MySQL 8's default strict sql_mode.

Each task gets its own database and its own user (`TaskDatabase`), created like AgentBench
does: every column TEXT, every value `str()`-ed. The agent's statements run as that user,
whose only rights are ordinary SQL on its own database (sqlguard.MARIADB_PRIVILEGES): no
FILE privilege (no `LOAD_FILE`, `INTO OUTFILE`, `LOAD DATA`), no other databases, no
`SET GLOBAL`, users, plugins or shutdown. The database and the user are dropped after the task;
`stop()` ends the server and deletes the folder (the runner calls it at the end, also after
Ctrl-C or an error; an `atexit` hook covers a forgotten `stop`).
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glm_agent.core.errors import GlmAgentError
from glm_agent.evals.suites.sqlguard import MARIADB_PRIVILEGES

__all__ = [
    "MariaDBError",
    "MariaDBServer",
    "TaskDatabase",
    "COLLATION",
    "SQL_MODE",
    "find_mariadbd",
    "quote_name",
    "table_hash",
]

COLLATION = "utf8mb4_uca1400_ai_ci"
_OLD_COLLATION = "utf8mb4_unicode_520_ci"  # servers before 10.10 lack the Unicode 14 collations
# MySQL 8's default sql_mode (AgentBench's `mysql:8` image): strict, so e.g. comparing a TEXT
# column holding 'Replay' with the number 1 in an UPDATE is an error, as it is upstream.
SQL_MODE = ("ONLY_FULL_GROUP_BY,STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,"
            "ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION")
INSTALL_HINT = "install MariaDB (Debian/Ubuntu: apt-get install mariadb-server) or run the db suite with --db sqlite"
# Where Debian puts the server; /usr/sbin is often not on a non-root PATH.
_SEARCH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/usr/libexec"])


class MariaDBError(GlmAgentError, RuntimeError):
    """MariaDB is not installed, or the private server could not start or answer."""


def find_mariadbd() -> tuple[str, str] | None:
    """(server, install-db script) paths, or None when MariaDB is not installed."""
    server = shutil.which("mariadbd", path=_SEARCH) or shutil.which("mysqld", path=_SEARCH)
    install = shutil.which("mariadb-install-db", path=_SEARCH) or shutil.which("mysql_install_db", path=_SEARCH)
    return (server, install) if server and install else None


def _collation(server: str) -> str:
    """The collation for this `mariadbd`; `MariaDBError` when it is MySQL's server, not MariaDB."""
    try:
        text = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise MariaDBError(f"{server} --version failed: {exc}") from None
    if "mariadb" not in text.lower():
        raise MariaDBError(f"{server} is not MariaDB ({text.strip() or 'no version'}): {INSTALL_HINT}")
    m = re.search(r"Ver\s+(\d+)\.(\d+)", text)
    return COLLATION if m is None or (int(m.group(1)), int(m.group(2))) >= (10, 10) else _OLD_COLLATION


def quote_name(name: str) -> str:
    """A MySQL identifier in backticks (a backtick inside is doubled)."""
    return "`" + str(name).replace("`", "``") + "`"


def _pymysql() -> Any:
    try:
        import pymysql
    except ImportError:
        raise MariaDBError("the db suite's MariaDB backend needs PyMySQL: pip install 'glm-agent[evals]'") from None
    return pymysql


@dataclass
class TaskDatabase:
    """One task's database, its user, and the user's connection (opened on first use)."""

    server: "MariaDBServer"
    name: str
    user: str
    password: str
    _conn: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def connect(self) -> Any:
        """A new connection as the task's user on its database (autocommit, as AgentBench commits
        after every statement; one statement per call: multi-statements are off)."""
        return self.server.connect(user=self.user, password=self.password, database=self.name)

    def execute(self, query: str, *, timeout: float,
                max_rows: int | None = None) -> tuple[list[str] | None, list[tuple], int]:
        """Run one statement as the task's user: (column names or None, rows, affected rows).

        The connection lives for the task (session variables and temporary tables persist, as in
        AgentBench); every statement is capped at `timeout` seconds by the server
        (`max_statement_time`, set again before each statement so the agent cannot lift it).
        With `max_rows`, rows are streamed and only that many kept, so a huge result cannot
        fill memory. Raises pymysql errors."""
        import pymysql.cursors

        with self._lock:
            if self._conn is None:
                self._conn = self.connect()
            conn = self._conn
            try:
                with conn.cursor() as cur:
                    cur.execute(f"SET SESSION max_statement_time = {float(timeout):g}")
                with conn.cursor(pymysql.cursors.SSCursor) as cur:
                    affected = cur.execute(query)
                    columns = [d[0] for d in cur.description] if cur.description else None
                    if columns is None:
                        rows: list[tuple] = []
                    elif max_rows is None:
                        rows = list(cur.fetchall())
                    else:
                        rows = list(cur.fetchmany(max_rows))
                    # Closing the cursor reads the rest of the result and drops it (the server stops
                    # sending at the statement's time cap).
                return columns, rows, affected
            except Exception:
                # A broken connection (server gone, killed query mid-packet) is reopened next time.
                if not conn.open:
                    self._conn = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
                self._conn = None

    def drop(self) -> None:
        """Close the connection and drop the database and the user."""
        self.close()
        self.server.drop(self)


class MariaDBServer:
    """A mariadbd process on a unix socket in a private temporary folder (see the module doc).

    `max_data_mb` caps what all task databases together may hold on disk (and, apart, their
    temporary tables): every table is InnoDB (no other engine may be named) in one system
    tablespace that stops growing there, and a statement that needs more fails with "The
    table ... is full" instead of filling the host's disk."""

    def __init__(self, *, start_timeout: float = 60.0, max_data_mb: int = 1024):
        self.start_timeout = start_timeout
        self.max_data_mb = max_data_mb
        self.folder: Path | None = None
        self.socket: str = ""
        self._proc: subprocess.Popen | None = None
        self._admin_password = ""
        self._admin: Any = None
        self._admin_lock = threading.Lock()
        self._names = itertools.count(1)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "MariaDBServer":
        """Create the datadir and start the server; `MariaDBError` saying what to do otherwise."""
        if self.running:
            return self
        found = find_mariadbd()
        if found is None:
            raise MariaDBError(f"mariadbd was not found: {INSTALL_HINT}")
        server, install = found
        pymysql = _pymysql()
        self.folder = Path(tempfile.mkdtemp(prefix="glm-agent-mariadb-"))  # mode 0700
        atexit.register(self.stop)
        try:
            self._start(server, install, pymysql)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, server: str, install: str, pymysql: Any) -> None:
        assert self.folder is not None
        data, files = self.folder / "data", self.folder / "no-files"
        files.mkdir()
        self.socket = str(self.folder / "mysqld.sock")
        log = self.folder / "server.log"
        user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses to run as root without it
        # One capped tablespace for all tables (the install creates it, so it gets the same).
        cap = int(self.max_data_mb)
        # Undo logs in their own files: a full tablespace can still take a DELETE.
        storage = ["--innodb-file-per-table=OFF", f"--innodb-data-file-path=ibdata1:12M:autoextend:max:{cap}M",
                   "--innodb-undo-tablespaces=2", "--innodb-undo-log-truncate=ON",
                   f"--innodb-temp-data-file-path=ibtmp1:12M:autoextend:max:{cap}M"]
        setup = subprocess.run(
            [install, "--no-defaults", *user, f"--datadir={data}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", *storage],
            capture_output=True, text=True, timeout=self.start_timeout,
        )
        if setup.returncode != 0:
            tail = (setup.stderr or setup.stdout).strip().splitlines()[-3:]
            raise MariaDBError(f"mariadb-install-db failed: {' '.join(tail)}")
        collation = _collation(server)
        self._proc = subprocess.Popen(
            [server, "--no-defaults", *user, f"--datadir={data}", f"--socket={self.socket}",
             f"--pid-file={self.folder / 'mysqld.pid'}", f"--log-error={log}",
             "--skip-networking", "--skip-name-resolve", "--skip-log-bin", "--local-infile=0",
             f"--sql-mode={SQL_MODE}", "--skip-symbolic-links",
             f"--secure-file-priv={files}", "--character-set-server=utf8mb4",
             f"--collation-server={collation}", "--skip-character-set-client-handshake",
             "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
             "--innodb-flush-log-at-trx-commit=0", "--max-connections=200",
             "--performance-schema=OFF", "--event-scheduler=OFF", *storage, "--enforce-storage-engine=InnoDB"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us, and we stop the server cleanly
        )
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise MariaDBError(f"mariadbd exited at start (status {self._proc.returncode}): {_tail(log)}")
            try:
                admin = pymysql.connect(unix_socket=self.socket, user="root", password="", autocommit=True,
                                        charset="utf8mb4", connect_timeout=5)
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    raise MariaDBError(f"mariadbd did not answer within {self.start_timeout:g} s: {_tail(log)}") from None
                time.sleep(0.1)
        # The socket's folder is private already; a random root password makes it two locks.
        self._admin_password = secrets.token_urlsafe(18)
        with admin.cursor() as cur:
            cur.execute("ALTER USER 'root'@'localhost' IDENTIFIED BY %s", (self._admin_password,))
            # Other passwordless accounts (root over TCP, anonymous users) go, though nothing listens.
            cur.execute("SELECT user, host FROM mysql.user WHERE NOT (user = 'root' AND host = 'localhost') "
                        "AND user <> 'mariadb.sys'")
            for user, host in cur.fetchall():
                cur.execute("DROP USER %s@%s", (user, host))
        self._admin = admin

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 20 s) and delete its folder. Idempotent."""
        atexit.unregister(self.stop)
        with self._admin_lock:
            if self._admin is not None:
                try:
                    self._admin.close()
                except Exception:
                    pass
                self._admin = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    def __enter__(self) -> "MariaDBServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- connections -----------------------------------------------------------------------
    def connect(self, *, user: str, password: str, database: str | None = None) -> Any:
        pymysql = _pymysql()
        if not self.running:
            raise MariaDBError("the MariaDB server is not running (start() it first)")
        return pymysql.connect(unix_socket=self.socket, user=user, password=password, database=database,
                               charset="utf8mb4", autocommit=True, local_infile=False, connect_timeout=10,
                               read_timeout=None)

    def admin(self, statements: list[str | tuple[str, Any]]) -> list[tuple]:
        """Run statements as root; the rows of the last one."""
        if not self.running:
            raise MariaDBError("the MariaDB server is not running (start() it first)")
        rows: list[tuple] = []
        with self._admin_lock:
            if self._admin is None or not self._admin.open:
                self._admin = self.connect(user="root", password=self._admin_password)
            with self._admin.cursor() as cur:
                for item in statements:
                    query, args = (item, None) if isinstance(item, str) else item
                    cur.execute(query, args)
                    rows = list(cur.fetchall()) if cur.description else []
        return rows

    # -- task databases --------------------------------------------------------------------
    def create_database(self, tables: dict[str, Any] | list[dict[str, Any]]) -> TaskDatabase:
        """A new database holding the task's table(s) and a user confined to it."""
        name = f"task_{next(self._names)}_{secrets.token_hex(4)}"
        db = TaskDatabase(self, name=name, user=name, password=secrets.token_urlsafe(18))
        account = f"'{db.user}'@'localhost'"
        self.admin([
            f"CREATE DATABASE {quote_name(name)}",
            (f"CREATE USER {account} IDENTIFIED BY %s", (db.password,)),
            f"GRANT {', '.join(MARIADB_PRIVILEGES)} ON {quote_name(name)}.* TO {account}",
        ])
        try:
            self.load(db, tables)
        except BaseException:
            self.drop(db)
            raise
        return db

    def load(self, db: TaskDatabase, tables: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Create and fill the tables as AgentBench does (TEXT columns, `str()` values); a table
        MySQL cannot hold (a name over 64 characters, ...) raises the server's error."""
        statements: list[str | tuple[str, Any]] = [f"USE {quote_name(db.name)}"]
        for table in tables if isinstance(tables, list) else [tables]:
            # pymysql fills %s into the text: a % in a name must be doubled where values follow.
            name = quote_name(table["table_name"])
            columns = [quote_name(c["name"]) for c in table["table_info"]["columns"]]
            insert_name, insert_columns = name.replace("%", "%%"), [c.replace("%", "%%") for c in columns]
            statements.append(f"CREATE TABLE IF NOT EXISTS {name} ({', '.join(c + ' TEXT' for c in columns)})")
            rows = table["table_info"]["rows"]
            if rows:
                marks = ", ".join("(" + ", ".join(["%s"] * len(row)) + ")" for row in rows)
                values = tuple(str(v) for row in rows for v in row)
                statements.append((f"INSERT INTO {insert_name} ({', '.join(insert_columns)}) VALUES {marks}", values))
        try:
            self.admin(statements)
        finally:
            self.admin(["USE mysql"])

    def drop(self, db: TaskDatabase) -> None:
        """Drop the task's database and user, ending the user's sessions first."""
        if not self.running:
            return
        ids = self.admin([(
            "SELECT id FROM information_schema.processlist WHERE user = %s", (db.user,))])
        statements: list[str | tuple[str, Any]] = [f"KILL CONNECTION {int(row[0])}" for row in ids]
        statements += [f"DROP DATABASE IF EXISTS {quote_name(db.name)}", f"DROP USER IF EXISTS '{db.user}'@'localhost'"]
        for statement in statements:
            try:
                self.admin([statement])
            except Exception:  # a session that ended meanwhile
                pass


def table_hash(db: TaskDatabase, table: dict[str, Any]) -> str:
    """AgentBench's state of a table after a mutation: the md5 of the sorted 5-character md5
    prefixes of its rows (`CONCAT_WS(',', columns)`), with MySQL's default 1024-byte
    `group_concat_max_len`, computed as root on the task's database."""
    columns = ", ".join(quote_name(c["name"]) for c in table["table_info"]["columns"])
    query = (
        "SELECT md5(group_concat(rowhash ORDER BY rowhash)) FROM (SELECT substring(md5(CONCAT_WS(',', "
        f"{columns})), 1, 5) AS rowhash FROM {quote_name(db.name)}.{quote_name(table['table_name'])}) AS sub"
    )
    rows = db.server.admin(["SET SESSION group_concat_max_len = 1024", query])
    value = rows[0][0] if rows else None
    return "" if value is None else str(value)


def _tail(log: Path, lines: int = 4) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no server log)"
    errors = [line for line in text if "[ERROR]" in line] or text
    return " | ".join(errors[-lines:]) or "(empty server log)"
