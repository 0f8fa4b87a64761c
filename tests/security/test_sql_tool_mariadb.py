"""Attack: the db suite's `sql` tool on MariaDB (`--db mariadb`) used to leave the task's own
database: read or write host files (LOAD_FILE, INTO OUTFILE/DUMPFILE, LOAD DATA [LOCAL],
DATA DIRECTORY), read or change other tasks' databases and the server's system tables, change
server settings (SET GLOBAL), create users, grant itself rights, install plugins or functions,
shut the server down, kill other sessions, escape the per-statement time cap, or fill the
host's disk. Ordinary SQL on its own database keeps working.

The agent's statements run as a per-task user with database-level rights only (sqlguard.py).
The server is a real mariadbd (installed by scripts/test.sh; missing, the tests fail).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.evals.suites.db_mariadb import MariaDBSQLTool

TABLE = {"table_name": "people", "table_info": {"columns": [{"name": "name", "type": "TEXT"},
                                                             {"name": "age", "type": "INT"}],
                                                "rows": [["ann", 31], ["bob", 45]]}}
SECRET = "host-secret-7f3a9c"


@pytest.fixture
def dbs(mariadb_server):
    """The agent's task database and another task's database (the victim)."""
    mine, other = mariadb_server.create_database(TABLE), mariadb_server.create_database(TABLE)
    yield mine, other
    mine.drop()
    other.drop()


def sql(db, query: str, timeout: float = 10.0) -> tuple[str, bool]:
    result = asyncio.run(MariaDBSQLTool(db, statement_timeout=timeout).call(
        {"query": query}, ToolContext(session_id="sql", workspace="/tmp")))
    return result.content, bool(result.is_error)


def test_host_files_are_out_of_reach(dbs, targets, mariadb_server):
    mine, _ = dbs
    secret_file = targets.folder / "secret.txt"
    secret_file.write_text(SECRET + "\n")
    readable = [secret_file, targets.existing, "/etc/passwd", mariadb_server.folder / "server.log"]
    for path in readable:
        for query in (f"SELECT LOAD_FILE('{path}')", f"SELECT CONVERT(LOAD_FILE('{path}') USING utf8mb4)",
                      f"LOAD DATA INFILE '{path}' INTO TABLE people",
                      f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE people",
                      f"LOAD XML INFILE '{path}' INTO TABLE people"):
            out, _ = sql(mine, query)
            assert SECRET not in out and "root:" not in out and "ready for connections" not in out, (query, out)
    rows, _ = sql(mine, "SELECT * FROM people")
    assert SECRET not in rows and "root:" not in rows and rows.count("\n") == 2  # columns + 2 rows
    writable = [*targets.all.values(), mariadb_server.folder / "no-files" / "x.txt", "x.txt"]
    for path in writable:
        for query in (f"SELECT * FROM people INTO OUTFILE '{path}'", f"SELECT 'x' INTO DUMPFILE '{path}'",
                      f"SELECT name FROM people INTO OUTFILE '{path}' FIELDS TERMINATED BY ','"):
            out, error = sql(mine, query)
            assert error and "FILE privilege" in out and "task's database only" in out, (query, out)
    # Tables stored outside the datadir (the server runs as root here): ignored with a warning.
    for folder in (targets.folder, targets.etc, mariadb_server.folder / "no-files"):
        for n, query in enumerate((
                f"CREATE TABLE evil{{n}} (x TEXT) DATA DIRECTORY = '{folder}'",
                f"CREATE TABLE evil{{n}} (x TEXT) ENGINE=MyISAM DATA DIRECTORY = '{folder}' INDEX DIRECTORY = '{folder}'",
                f"CREATE TABLE evil{{n}} (x TEXT) ENGINE=Aria DATA DIRECTORY = '{folder}'",
                f"CREATE TABLE evil{{n}} (x INT) PARTITION BY HASH(x) (PARTITION p0 DATA DIRECTORY = '{folder}')",
                f"ALTER TABLE people DATA DIRECTORY = '{folder}'")):
            sql(mine, query.format(n=n))
            assert not (folder.exists() and any(folder.glob("**/evil*"))) and targets.problems() == [], query
        assert not any(folder.glob("**/people*")) if folder.exists() else True
    assert targets.problems() == []
    assert list((mariadb_server.folder / "no-files").iterdir()) == []


def test_other_databases_are_out_of_reach(dbs):
    mine, other = dbs
    theirs = f"`{other.name}`"
    for query in (f"SELECT * FROM {theirs}.people", f"USE {theirs}", f"INSERT INTO {theirs}.people VALUES ('x', 1)",
                  f"UPDATE {theirs}.people SET age = 0", f"DELETE FROM {theirs}.people", f"DROP TABLE {theirs}.people",
                  f"DROP DATABASE {theirs}", f"CREATE TABLE {theirs}.evil (x INT)", f"RENAME TABLE people TO {theirs}.p2",
                  f"CREATE VIEW {theirs}.v AS SELECT 1", "SELECT * FROM mysql.user", "SELECT * FROM mysql.db",
                  "UPDATE mysql.user SET Super_priv = 'Y'", "CREATE DATABASE evil",
                  "SELECT * FROM performance_schema.threads",
                  f"CREATE TABLE m (name TEXT, age TEXT) ENGINE=MRG_MyISAM UNION=({theirs}.people)"):
        out, error = sql(mine, query)
        assert error and "task's database only" in out, (query, out)
    listing, _ = sql(mine, "SHOW DATABASES")
    assert other.name not in listing and "mysql" not in listing.replace("information_schema", "")
    tables, _ = sql(mine, "SELECT table_schema FROM information_schema.tables")
    assert other.name not in tables
    sessions, _ = sql(mine, "SELECT user FROM information_schema.processlist")
    assert other.user not in sessions and "root" not in sessions
    _, rows, _ = other.execute("SELECT * FROM people", timeout=5)
    assert rows == [("ann", "31"), ("bob", "45")]


def test_server_settings_users_and_plugins_are_out_of_reach(dbs, mariadb_server):
    mine, other = dbs
    before = mariadb_server.admin(["SELECT @@general_log, @@general_log_file, @@max_connections, @@max_statement_time, "
                           "@@sql_mode, @@local_infile, @@event_scheduler"])
    _, _, _ = other.execute("SELECT 1", timeout=5)  # the victim has a session to kill
    (their_id,), = mariadb_server.admin([("SELECT id FROM information_schema.processlist WHERE user = %s", (other.user,))])
    for query in ("SET GLOBAL general_log = 1", "SET GLOBAL general_log_file = '/tmp/evil.log'",
                  "SET GLOBAL max_connections = 1", "SET GLOBAL max_statement_time = 0",
                  "SET GLOBAL sql_mode = ''", "SET GLOBAL local_infile = 1", "SET GLOBAL event_scheduler = ON",
                  "CREATE USER evil IDENTIFIED BY 'x'", f"GRANT ALL ON *.* TO '{mine.user}'@'localhost'",
                  f"GRANT FILE ON *.* TO '{mine.user}'@'localhost'", f"ALTER USER '{other.user}'@'localhost' IDENTIFIED BY 'x'",
                  "INSTALL SONAME 'ha_connect'", "INSTALL PLUGIN connect SONAME 'ha_connect'",
                  "CREATE FUNCTION sys_exec RETURNS INT SONAME 'lib_mysqludf_sys.so'",
                  "CREATE PROCEDURE p() SELECT SLEEP(100)",
                  "CREATE TRIGGER t BEFORE INSERT ON people FOR EACH ROW SET NEW.age = SLEEP(100)",
                  "CREATE EVENT e ON SCHEDULE EVERY 1 SECOND DO DELETE FROM people",
                  "SHUTDOWN", f"KILL {their_id}", f"KILL QUERY {their_id}", "FLUSH PRIVILEGES"):
        out, error = sql(mine, query)
        assert error, (query, out)
    after = mariadb_server.admin(["SELECT @@general_log, @@general_log_file, @@max_connections, @@max_statement_time, "
                          "@@sql_mode, @@local_infile, @@event_scheduler"])
    assert after == before
    assert mariadb_server.running
    assert other.execute("SELECT COUNT(*) FROM people", timeout=5)[1] == [(2,)]
    assert mariadb_server.admin(["SELECT COUNT(*) FROM mysql.user WHERE user = 'evil'"]) == [(0,)]


@pytest.mark.parametrize("lift", ["", "SET SESSION max_statement_time = 0", "SET max_statement_time = 1000"])
def test_statement_time_cap_cannot_be_lifted(dbs, lift):
    mine, _ = dbs
    if lift:
        sql(mine, lift, timeout=1)
    started = time.monotonic()
    out, error = sql(mine, "SELECT SLEEP(20)", timeout=1)
    assert time.monotonic() - started < 10
    assert error and "longer than 1 s" in out
    heavy = "SELECT COUNT(*) FROM people a, people b, people c, people d, people e, people f, people g, people h"
    sql(mine, "INSERT INTO people SELECT CONCAT(a.name, b.name), 1 FROM people a, people b, people c, people d")
    started = time.monotonic()
    out, _ = sql(mine, heavy + ", people i, people j, people k, people l", timeout=1)
    assert time.monotonic() - started < 10


def test_ordinary_sql_still_works(dbs):
    mine, _ = dbs
    for query, expect in (("SELECT name FROM people WHERE age > 40", '["bob"]'),
                          ("CREATE TABLE notes (x TEXT)", "OK"), ("INSERT INTO notes VALUES ('n')", "1 row"),
                          ("CREATE TEMPORARY TABLE tmp (x INT)", "OK"), ("CREATE VIEW v AS SELECT name FROM people", "OK"),
                          ("SELECT COUNT(*) FROM v", "[2]"), ("SHOW TABLES", "notes"), ("DESCRIBE people", "age"),
                          ("SELECT name FROM people WHERE name = 'ANN'", '["ann"]'),  # case-insensitive as MySQL
                          ("SET @x = 5", "OK"), ("SELECT @x", "[5]"), ("DROP TABLE notes", "OK")):
        out, error = sql(mine, query)
        assert not error and expect in out, (query, out)
    out, error = sql(mine, "SELECT 1; SELECT 2")
    assert error and "one statement per call" in out


def test_the_databases_cannot_fill_the_disk():
    from glm_agent.evals.suites.mariadb import MariaDBServer

    with MariaDBServer(max_data_mb=40) as small:
        db = small.create_database(TABLE)
        # Other engines would live outside the capped tablespace: refused, for tables and temporary ones.
        for engine in ("MyISAM", "Aria", "MEMORY", "CSV"):
            for kind in ("TABLE", "TEMPORARY TABLE"):
                out, err = sql(db, f"CREATE {kind} e_{engine}_{kind[:4]} (x INT) ENGINE={engine}")
                assert err and "NO_ENGINE_SUBSTITUTION" in out, (engine, kind, out)
        sql(db, "CREATE TABLE big (x VARCHAR(2000))")
        sql(db, "INSERT INTO big VALUES (REPEAT('x', 2000))")
        outs = []
        for _ in range(20):  # doubling: 2 KB * 2^20 = 2 GB if nothing stops it
            out, err = sql(db, "INSERT INTO big SELECT * FROM big")
            outs.append(out)
            if err:
                break
        assert err and "is full" in out, outs[-3:]
        out, err = sql(db, "CREATE TABLE t2 AS SELECT * FROM big")
        assert err and "is full" in out, out
        # Temporary tables have their own tablespace, capped the same way.
        assert not sql(db, "CREATE TEMPORARY TABLE t AS SELECT * FROM big LIMIT 1000")[1]
        for _ in range(20):
            out, err = sql(db, "INSERT INTO t SELECT * FROM t")
            if err:
                break
        assert err and "is full" in out, out
        data = sum(f.stat().st_size for f in (small.folder / "data").rglob("*") if f.is_file())
        assert data < 200 * 2**20, data  # 2 x 40 MB of tablespaces + logs and system tables
        # The task goes on: reads and deletes work, and space comes back for new rows.
        out, err = sql(db, "SELECT COUNT(*) > 1000 FROM big")
        assert not err and "1" in out
        assert not sql(db, "DELETE FROM big")[1] and not sql(db, "INSERT INTO big VALUES ('y')")[1]
        db.drop()
