"""Attack: the db suite's `sql` tool (which runs on the host, not in the sandbox) used to
create, open or overwrite files outside its database: ATTACH and VACUUM INTO with host paths
(plain, relative, URI, computed at run time, behind comments, in any case), file-moving
PRAGMAs, extensions, and filling the disk. Ordinary SQL, schema introspection included,
keeps working.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.evals.suites.db import SQLTool, create_database
from glm_agent.evals.suites.sqlguard import DENIED_MESSAGE

TABLE = {"table_name": "people", "table_info": {"columns": [{"name": "name", "type": "TEXT"},
                                                             {"name": "age", "type": "INT"}],
                                                "rows": [["ann", 31], ["bob", 45]]}}


@pytest.fixture
def db(tmp_path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    path = ws / "task.db"
    create_database(path, TABLE)
    return path


def sql(db: Path, query: str, **kw):
    return asyncio.run(SQLTool(db, **kw).call({"query": query}, ToolContext(session_id="sql", workspace=db.parent)))


def attack_statements(target: Path, db: Path) -> list[str]:
    rel = os.path.relpath(target, db.parent)
    head, tail = str(target)[:5], str(target)[5:]
    return [
        f"ATTACH '{target}' AS x",
        f"attach database '{target}' as x",
        f"/* comment */ ATTACH DATABASE \"{target}\" AS x",
        f"-- line\nATTACH '{rel}' AS x",
        f"ATTACH 'file:{target}?mode=rwc' AS x",
        f"ATTACH '{head}' || '{tail}' AS x",
        f"ATTACH (SELECT '{head}' || '{tail}') AS x",
        f"VACUUM INTO '{target}'",
        f"vacuum main into '{target}'",
        f"VACUUM INTO '{head}' || '{tail}'",
        f"VACUUM INTO 'file:{target}?mode=rwc'",
    ]


def test_no_statement_creates_a_file_outside_the_database(db, targets):
    for name, target in targets.all.items():
        if name == "existing":
            continue
        for statement in attack_statements(target, db):
            r = sql(db, statement)
            assert r.is_error and DENIED_MESSAGE in r.content, (statement, r.content)
    # Overwriting an existing file (VACUUM INTO refuses one; ATTACH would write to it).
    for statement in attack_statements(targets.existing, db):
        r = sql(db, statement)
        assert r.is_error, (statement, r.content)
    r = sql(db, f"ATTACH '{targets.existing}' AS x")
    assert DENIED_MESSAGE in r.content
    assert targets.problems() == []
    assert sorted(p.name for p in db.parent.iterdir()) == ["task.db"]


@pytest.mark.parametrize("statement", [
    "PRAGMA temp_store_directory = '/var/tmp'",
    "PRAGMA journal_mode = WAL",
    "pragma main.journal_mode=wal",
    "PRAGMA writable_schema = ON",
    "PRAGMA mmap_size = 1000000000",
    "PRAGMA max_page_count = 2147483647",
    "PRAGMA user_version = 7",
    "PRAGMA database_list",  # the database's host path
    "SELECT * FROM pragma_database_list",
    "SELECT load_extension('/usr/lib/x86_64-linux-gnu/libm.so.6')",
    "SELECT fts3_tokenizer('simple')",
    "DETACH DATABASE main",
])
def test_pragmas_and_functions_that_touch_files_or_settings_are_denied(db, statement):
    r = sql(db, statement)
    assert r.is_error and DENIED_MESSAGE in r.content, r.content
    assert sorted(p.name for p in db.parent.iterdir()) == ["task.db"]
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
    finally:
        conn.close()


@pytest.mark.parametrize("statement, expected", [
    ("SELECT name FROM people WHERE age > 40", '["bob"]'),
    ("PRAGMA table_info(people)", '"name"'),
    ("SELECT name FROM pragma_table_info('people') ORDER BY cid", '["age"]'),
    ("PRAGMA index_list(people)", "(no rows)"),
    ("PRAGMA user_version", "[0]"),
    ("SELECT sql FROM sqlite_master", "CREATE TABLE"),
    ("INSERT INTO people VALUES ('cy', 20)", "1 row(s) affected"),
    ("UPDATE people SET age = age + 1", "2 row(s) affected"),
    ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 5) SELECT sum(x) FROM c", "[15]"),
    ("CREATE TABLE t2 AS SELECT * FROM people", "OK"),
])
def test_ordinary_sql_still_works(db, statement, expected):
    r = sql(db, statement)
    assert not r.is_error and expected in r.content, r.content


def test_the_database_cannot_fill_the_disk(db):
    r = sql(db, "CREATE TABLE big AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 100) "
                "SELECT randomblob(100000) AS b FROM c", max_db_mb=2)
    assert r.is_error and "the database is full (it may hold at most 2 MiB" in r.content, r.content
    assert db.stat().st_size <= 2 * 1024 * 1024
    assert not sql(db, "SELECT count(*) FROM people", max_db_mb=2).is_error
