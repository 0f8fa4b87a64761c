"""The `shell` tool: real bash in the real sandbox."""

from __future__ import annotations

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.sandbox import SandboxConfig, bwrap_available
from glm_agent.tools.shell import ShellTool

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=2)


def ctx(ws):
    return ToolContext(session_id="t", workspace=ws)


async def test_files_persist_between_commands_and_exit_codes_are_reported(tmp_path):
    t = ShellTool(sandbox=CFG)
    r = await t.call({"command": "pwd; echo 数据 > notes.txt"}, ctx(tmp_path))
    assert r.content == "/mnt/data" and not r.is_error
    r = await t.call({"command": "cat notes.txt; ls /nope"}, ctx(tmp_path))
    assert r.content.startswith("数据\nls: cannot access '/nope'")
    assert r.content.endswith("[exit code: 2]") and r.data["exit_code"] == 2
    assert (tmp_path / "notes.txt").read_text() == "数据\n"
    r = await t.call({"command": "true"}, ctx(tmp_path))
    assert r.content == "(no output)"


async def test_timeout_and_truncation(tmp_path):
    t = ShellTool(sandbox=CFG, max_output_chars=1000)
    r = await t.call({"command": "echo start; sleep 30"}, ctx(tmp_path))
    assert r.content == "start\n[Command timed out after 2 s and was killed]" and r.data["timed_out"]
    r = await t.call({"command": "seq 1 100000"}, ctx(tmp_path))
    assert len(r.content) < 1200 and r.content.startswith("1\n2\n") and r.content.endswith("100000")
    assert r.full_output is not None and r.full_output.endswith("99999\n100000")


async def test_sandbox_holds_for_shell_commands(tmp_path):
    t = ShellTool(sandbox=CFG)
    r = await t.call({"command": "touch /etc/x; curl -s -m 2 http://127.0.0.1:1 || echo nonet; "
                                 "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 80), timeout=1)' "
                                 "2>&1 | tail -1"}, ctx(tmp_path))
    assert "Read-only file system" in r.content
    assert "Network is unreachable" in r.content


async def test_run_raw_and_init_scripts_for_eval_suites(tmp_path):
    extra = tmp_path / "extra"
    extra.mkdir()
    cfg = CFG.with_(rw_binds=(f"{extra}:/srv/task",))
    ws = tmp_path / "ws"
    t = ShellTool(sandbox=cfg, workspace=ws, init="mkdir -p /srv/task/logs && echo ready > /srv/task/state")
    res = await t.run_raw("echo -n setup > seed.txt; cat", stdin="from stdin")
    assert res.ok and res.output == "from stdin" and (ws / "seed.txt").read_text() == "setup"
    r = await t.call({"command": "cat /srv/task/state seed.txt; ls /srv/task"}, ctx(tmp_path / "ignored"))
    assert r.content == "ready\nsetuplogs\nstate"  # seed.txt has no newline
    assert (extra / "state").read_text() == "ready\n"


async def test_bad_arguments(tmp_path):
    t = ShellTool(sandbox=CFG)
    assert (await t.call({"command": ""}, ctx(tmp_path))).is_error
    assert (await t.call({}, ctx(tmp_path))).is_error


async def test_the_session_keeps_cd_variables_and_functions_and_survives_exit(tmp_path):
    t = ShellTool(sandbox=CFG)
    try:
        r = await t.call({"command": "mkdir -p sub && cd sub && X=1 && f() { echo f$1; }"}, ctx(tmp_path))
        assert r.content == "(no output)"
        r = await t.call({"command": "pwd; echo $X; f 2"}, ctx(tmp_path))
        assert r.content == "/mnt/data/sub\n1\nf2"
        r = await t.call({"command": "echo start; sleep 30"}, ctx(tmp_path))  # killed; the shell goes on
        assert r.data["timed_out"] and not r.data["restarted"]
        r = await t.call({"command": "pwd; echo $X"}, ctx(tmp_path))
        assert r.content == "/mnt/data/sub\n1"
        r = await t.call({"command": "exit 4"}, ctx(tmp_path))
        assert r.data["restarted"] and r.data["exit_code"] == 4
        assert r.content.startswith("[exit code: 4]\n[The shell exited (status 4); a new shell was started in /mnt/data")
        r = await t.call({"command": "pwd; echo \"[$X]\""}, ctx(tmp_path))
        assert r.content == "/mnt/data\n[]"
    finally:
        await t.aclose()


async def test_aclose_stops_the_sandbox(tmp_path):
    from glm_agent.sandbox.procs import pid_alive

    t = ShellTool(sandbox=CFG)
    await t.call({"command": "sleep 300 &"}, ctx(tmp_path))
    box = t._box
    pids = [box._proc.pid, *box.host_pids()]
    assert len(pids) >= 3  # the launcher, the shell, sleep
    await t.aclose()
    assert not any(pid_alive(p) for p in pids)
