"""The db suite on a real MariaDB server (`--db mariadb`), as AgentBench runs DBBench on MySQL.

The server is Debian's mariadbd, started by the suite in a private temporary folder. It is
installed by scripts/test.sh: when it is missing these tests fail with the install command,
they never skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from glm_agent.core.messages import ToolCall
from glm_agent.evals.oracle import OracleFactory
from glm_agent.evals.suites import make_suite
from glm_agent.evals.suites.mariadb import MariaDBServer, table_hash

REPO = Path(__file__).resolve().parents[2]


def _table(name: str, columns: list[str], rows: list[list]) -> dict:
    return {"table_name": name, "table_info": {"columns": [{"name": c, "type": "TEXT"} for c in columns],
                                               "rows": rows}}


PLAYERS = _table("Club Players", ["Name", "Team", "Goals"],
                 [["José Pérez", "River", "12"], ["Ana Gómez", "Boca", "7"], ["Malmö Kid", "Malmö FF", "3"],
                  ["Zoë Ng", "River", "9"]])


def _write(path: Path, tasks: list[dict]) -> Path:
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks), encoding="utf-8")
    return path


def _task(description: str, label: list, kind: str, *, sql: str | None = None, table: dict = PLAYERS) -> dict:
    task = {"description": description, "label": label, "type": [kind], "table": table}
    if sql is not None:
        task["sql"] = {"query": sql}
    return task


def _by_id(ev, out: Path) -> dict[str, dict]:
    return {r["id"]: r for r in ev.records(out)}


def _task_users_and_databases(server: MariaDBServer) -> tuple[list, list]:
    users = server.admin(["SELECT user FROM mysql.user WHERE user LIKE 'task%'"])
    dbs = server.admin(["SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'task%'"])
    return users, dbs


# -- the server --------------------------------------------------------------------------------
def _listening_tcp_inodes() -> set[str]:
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                inodes.add(fields[9])
    return inodes


def test_server_is_private_listens_on_no_port_and_stops(mariadb_server):
    folder, pid = mariadb_server.folder, mariadb_server._proc.pid
    assert folder is not None and (folder.stat().st_mode & 0o777) == 0o700
    assert Path(mariadb_server.socket).parent == folder and Path(mariadb_server.socket).is_socket()
    (networking, port, infile, collation), = mariadb_server.admin(
        ["SELECT @@skip_networking, @@port, @@local_infile, @@collation_server"])
    assert (networking, port, infile) == (1, 0, 0)
    assert collation.endswith("_ai_ci")  # accent-insensitive, as MySQL 8's default
    sockets = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1] for fd in os.listdir(f"/proc/{pid}/fd")
               if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")}
    assert sockets and not sockets & _listening_tcp_inodes()

    other = MariaDBServer().start()
    other_folder, other_pid = other.folder, other._proc.pid
    other.stop()
    assert not other_folder.exists() and not Path(f"/proc/{other_pid}").exists()
    other.stop()  # idempotent


def _mariadbd_using(folder: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(folder) in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def _wait_for_server_folder(tmp: Path, proc: subprocess.Popen, timeout: float = 60.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in tmp.glob("glm-agent-mariadb-*") if (p / "mysqld.sock").exists()]
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("the server did not start")


RUN_SLOW_EVAL = """
import asyncio, signal, sys
# Ctrl-C as in a terminal: a test run started in the background inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
from glm_agent.evals.runner import run_eval
from glm_agent.evals.suites import make_suite
from glm_agent.models.scripted import ScriptedModel
asyncio.run(run_eval([make_suite("db", db="mariadb")], ScriptedModel(["x"], delay=300), sys.argv[1],
                     limit=1, progress=False))
"""

EXIT_WITHOUT_STOP = """
import sys
from glm_agent.evals.suites.mariadb import MariaDBServer
MariaDBServer().start()
print("started", flush=True)
sys.stdin.readline()  # the test looks at the server first
sys.exit(3)
"""


@pytest.mark.parametrize("how", ["ctrl-c during a run", "exit without stop"])
def test_server_stops_on_ctrl_c_and_on_exit(tmp_path, how):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(REPO)}
    code, args = (RUN_SLOW_EVAL, [str(tmp_path / "run")]) if how.startswith("ctrl") else (EXIT_WITHOUT_STOP, [])
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        folder = _wait_for_server_folder(tmp, proc)
        assert _mariadbd_using(folder)
        if how.startswith("ctrl"):
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
        else:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(180)  # stopping mariadbd flushes InnoDB: slow on a loaded machine
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not folder.exists()
    assert _mariadbd_using(folder) == []


# -- cause 7: MySQL semantics --------------------------------------------------------------------
async def test_accent_insensitive_collation_as_mysql(ev, tmp_path, mariadb_server):
    """MySQL's default collation ignores accents: a gold UPDATE written `WHERE Name = 'Jose Perez'`
    changes José Pérez's row, so the agent that names him exactly is right. On MariaDB it passes;
    on SQLite the gold matches nothing and the same correct agent fails (the reason for --db mariadb)."""
    data = _write(tmp_path / "t.jsonl", [
        _task("Move Jose Perez to Boca.", ["UPDATE `Club Players` SET Team = 'Boca' WHERE Name = 'Jose Perez'"],
              "UPDATE"),
        _task("How many goals did Malmo Kid score?", ["3"], "other",
              sql="SELECT Goals FROM `Club Players` WHERE Name = 'Malmo Kid'"),
    ])
    update = "UPDATE `Club Players` SET Team = 'Boca' WHERE Name = 'José Pérez'"

    def agent(suite, sample):
        if sample.category == "UPDATE":
            return [ToolCall(name="sql", arguments={"query": update}), "Final Answer: done"]
        return [ToolCall(name="sql", arguments={"query": "SELECT Goals FROM `Club Players` WHERE Name = 'Malmo Kid'"}),
                lambda messages: f"Final Answer: [\"{json.loads(messages[-1].content.splitlines()[1])[0]}\"]"]

    await ev.run_suite(make_suite("db", data=data, db="mariadb", server=mariadb_server), ev.per_sample(agent), tmp_path / "m")
    maria = _by_id(ev, tmp_path / "m")
    assert maria["t-1"]["score"] == 1.0, maria["t-1"]["detail"]
    assert maria["t-2"]["score"] == 1.0, maria["t-2"]["detail"]

    await ev.run_suite(make_suite("db", data=data), ev.per_sample(agent), tmp_path / "s")
    lite = _by_id(ev, tmp_path / "s")
    assert lite["t-1"]["score"] == 0.0 and lite["t-2"]["score"] == 0.0


async def test_mysql_only_gold_is_judged_on_mariadb(ev, tmp_path, mariadb_server):
    """A gold statement SQLite cannot parse (MySQL's INSERT ... SET; on SQLite the task is
    unsupported, test_eval_db_oracle.py): MariaDB judges it, the right rows pass, a wrong row fails."""
    data = _write(tmp_path / "t.jsonl", [
        _task("Add Lia Sousa, team River, 4 goals.",
              ["INSERT INTO `Club Players` SET Name = 'Lia Sousa', Team = 'River', Goals = '4'"], "INSERT"),
    ])

    def agent(goals):
        insert = f"INSERT INTO `Club Players` (Name, Team, Goals) VALUES ('Lia Sousa', 'River', '{goals}')"
        return ev.per_sample(lambda su, sa: [ToolCall(name="sql", arguments={"query": insert}), "Final Answer: done"])

    for goals, score in ((4, 1.0), (5, 0.0)):
        out = tmp_path / f"maria-{goals}"
        await ev.run_suite(make_suite("db", data=data, db="mariadb", server=mariadb_server), agent(goals), out)
        (record,) = ev.records(out)
        assert (record["status"], record["score"]) == ("completed", score), record["detail"]


def _agentbench_hash(rows: list[list]) -> str:
    """AgentBench's table hash in Python: md5 of the sorted 5-character md5 prefixes of
    CONCAT_WS(',', row) (NULLs skipped), cut at MySQL's 1024-byte group_concat_max_len."""
    prefixes = sorted(hashlib.md5(",".join(v for v in row if v is not None).encode()).hexdigest()[:5]
                      for row in rows)
    return hashlib.md5(",".join(prefixes)[:1024].encode()).hexdigest()


@pytest.mark.parametrize("n_rows", [3, 400])
def test_table_hash_is_agentbench_md5(mariadb_server, n_rows):
    rows = [[f"Ünïcode {i}", str(i * 7), "x,y"] for i in range(n_rows)]
    table = _table("hash me", ["a", "b", "c"], rows)
    db = mariadb_server.create_database(table)
    try:
        assert table_hash(db, table) == _agentbench_hash(rows)
        db.execute("UPDATE `hash me` SET c = NULL WHERE b = '7'", timeout=5)
        rows[1][2] = None
        assert table_hash(db, table) == _agentbench_hash(rows)
    finally:
        db.drop()


# -- cause 9: the oracle runs the gold SQL --------------------------------------------------------
async def test_oracle_runs_gold_sql_and_marks_broken_gold(ev, tmp_path, mariadb_server):
    """SELECT tasks: the oracle runs the gold SQL through the sql tool and answers with its rows;
    a task whose gold SQL fails, or returns something else than the label, is marked unsupported
    with the reason instead of replaying the label."""
    data = _write(tmp_path / "t.jsonl", [
        _task("Who plays for River?", ["José Pérez", "Zoë Ng"], "other",
              sql="SELECT Name FROM `Club Players` WHERE Team = 'River'"),
        _task("How many players?", ["5"], "counting", sql="SELECT COUNT(*) FROM `Club Players`"),
        _task("Top scorer?", ["José Pérez"], "ranking",
              sql="SELECT Name FROM `Club Players` ORDER BY CAST(Goals AS INTEGER) DESCLIMIT 1"),
    ])
    summary = await ev.run_suite(make_suite("db", data=data, db="mariadb", server=mariadb_server), OracleFactory(),
                                 tmp_path / "run")
    by_id = _by_id(ev, tmp_path / "run")
    good = by_id["t-1"]
    assert (good["status"], good["score"]) == ("completed", 1.0), good["detail"]
    calls = [c for m in good["messages"] if m["role"] == "assistant" for c in m.get("tool_calls") or []]
    assert calls[0]["arguments"]["query"].startswith("SELECT Name FROM")
    observation = next(m for m in good["messages"] if m["role"] == "tool")["content"]
    assert "Zoë Ng" in observation and "José Pérez" in observation

    assert by_id["t-2"]["status"] == "unsupported" and "returns ['4'], the label is ['5']" in by_id["t-2"]["detail"]
    assert by_id["t-3"]["status"] == "unsupported" and "fails on mariadb: (1064) syntax error" in by_id["t-3"]["detail"]
    assert by_id["t-2"]["score"] is None and by_id["t-3"]["score"] is None
    assert summary["suites"]["db"]["score"] == 1.0


async def test_shipped_tasks_oracle_on_mariadb(ev, tmp_path, mariadb_server):
    summary = await ev.run_suite(make_suite("db", db="mariadb", server=mariadb_server), OracleFactory(), tmp_path)
    s = summary["suites"]["db"]
    assert (s["n"], s["judged"], s["score"]) == (27, 27, 1.0), s["statuses"]
    assert all("a MySQL database" in r["system"] for r in ev.records(tmp_path))


async def test_oracle_on_agentbench_dev_with_mariadb(ev, tmp_path, mariadb_server):
    """All 60 public dev tasks on MariaDB: every task whose gold runs and agrees with its label is
    solved, mutations judged against AgentBench's own `answer_md5` (computed on MySQL); the rest
    are unsupported with a reason. Each task's database and user are dropped afterwards."""
    suite = make_suite("db", data=ev.agentbench_file("db_dev.jsonl"), db="mariadb", server=mariadb_server)
    summary = await ev.run_suite(suite, OracleFactory(), tmp_path, concurrency=2)
    s = summary["suites"]["db"]
    assert s["n"] == 60 and s["score"] == 1.0
    assert s["statuses"] == {"completed": 45, "unsupported": 15}, s["statuses"]
    records = ev.records(tmp_path)
    mutations = [r for r in records if r["category"] in ("INSERT", "UPDATE")]
    assert len(mutations) == 40 and all(r["score"] == 1.0 for r in mutations)
    assert all("hash matches" in r["detail"] for r in mutations)
    assert all(r["detail"] for r in records if r["status"] == "unsupported")
    assert _task_users_and_databases(mariadb_server) == ([], [])


async def test_wrong_mutation_fails_against_answer_md5(ev, tmp_path, mariadb_server):
    """An agent that changes the table otherwise than the gold fails against upstream's hash."""
    lines = ev.agentbench_file("db_dev.jsonl").read_text().splitlines()
    task = next(t for t in map(json.loads, lines) if t["type"][0] == "INSERT" and t.get("answer_md5"))
    data = _write(tmp_path / "one.jsonl", [task])
    table = task["table"]["table_name"]
    turns = [ToolCall(name="sql", arguments={"query": f"DELETE FROM `{table}` LIMIT 1"}), "Final Answer: done"]
    await ev.run_suite(make_suite("db", data=data, db="mariadb", server=mariadb_server), ev.per_sample(lambda su, sa: turns),
                       tmp_path / "run")
    (record,) = ev.records(tmp_path / "run")
    assert (record["status"], record["score"]) == ("completed", 0.0)
    assert "differs from the expected" in record["detail"]


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_db_option(tmp_path):
    from typer.testing import CliRunner

    from glm_agent.cli.eval import eval_app

    runner = CliRunner()
    out = tmp_path / "run"
    res = runner.invoke(eval_app, ["run", "db", "--db", "mariadb", "--oracle", "--limit", "3", "--out", str(out),
                                   "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads((out / "config.json").read_text())["settings"]["db"] == {"db": "mariadb"}
    assert all(json.loads(line)["score"] == 1.0 for line in (out / "runs.jsonl").read_text().splitlines())
    res = runner.invoke(eval_app, ["run", "db", "--db", "sqlite", "--oracle", "--limit", "3", "--out", str(out)])
    assert res.exit_code == 2 and "db db 'mariadb' -> 'sqlite'" in res.output
    res = runner.invoke(eval_app, ["run", "db", "--db", "postgres", "--oracle", "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and "--db must be 'sqlite' or 'mariadb'" in res.output
