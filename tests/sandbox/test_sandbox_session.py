"""The persistent shell session (sandbox/session.py): real bash in a real long-lived sandbox."""

from __future__ import annotations

import pytest

from glm_agent.sandbox import SandboxConfig, bwrap_available
from glm_agent.sandbox.session import LiveSandbox, ShellSession

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")


@pytest.fixture
def session(tmp_path):
    box = LiveSandbox(SandboxConfig(memory_mb=1024, nprocs=64, timeout=2), tmp_path)
    s = ShellSession(box, max_capture_chars=1000)
    yield s
    s.close()
    box.close()


async def test_cd_variables_and_functions_persist_with_exit_codes(session):
    r = await session.run("pwd; cd /tmp && mkdir -p a/b && cd a; X=42; export Y=7; f() { echo \"f:$1\"; }", timeout=5)
    assert r.output == "/mnt/data\n" and r.exit_code == 0 and not r.restarted
    r = await session.run("pwd; echo $X $Y; f hi; bash -c 'echo child:$Y'; false", timeout=5)
    assert r.output == "/tmp/a\n42 7\nf:hi\nchild:7\n" and r.exit_code == 1
    r = await session.run("echo -n no newline; (exit 3)", timeout=5)
    assert r.output == "no newline" and r.exit_code == 3
    # Quotes, backslashes, tabs and non-ASCII travel unchanged; a syntax error is the command's own.
    r = await session.run("printf '%s|' 'a\"b' \"c'd\" 'e\\f' $'g\\th' 数据", timeout=5)
    assert r.output == "a\"b|c'd|e\\f|g\th|数据|"
    r = await session.run("echo 'unclosed", timeout=5)
    assert r.exit_code == 2 and "unexpected EOF" in r.output
    r = await session.run("echo $X", timeout=5)
    assert r.output == "42\n"


async def test_commands_cannot_read_the_session_input(session):
    r = await session.run("cat; read -r line; echo \"[$line]\"", timeout=5)
    assert r.output == "[]\n" and not r.timed_out
    assert (await session.run("echo still here", timeout=5)).output == "still here\n"


async def test_timeout_kills_the_command_and_the_session_goes_on(session):
    await session.run("cd /tmp; KEEP=yes", timeout=5)
    r = await session.run("echo started; sleep 60", timeout=1)
    assert r.timed_out and r.exit_code is None and r.output.startswith("started\n") and "Killed" not in r.output
    assert not r.restarted
    r = await session.run("pwd; echo $KEEP", timeout=5)
    assert r.output == "/tmp\nyes\n"


async def test_a_shell_that_does_not_come_back_is_restarted_with_a_notice(session):
    await session.run("cd /tmp; KEEP=yes; echo data > /mnt/data/file", timeout=5)
    r = await session.run("while :; do :; done", timeout=1)  # the shell itself loops: killing children is not enough
    assert r.timed_out and r.restarted and "new shell was started" in r.notice
    r = await session.run("pwd; echo \"[$KEEP]\"; cat file", timeout=5)
    assert r.output == "/mnt/data\n[]\ndata\n" and r.notice is None


async def test_exit_restarts_the_shell_with_a_notice(session):
    await session.run("cd /tmp; KEEP=yes", timeout=5)
    r = await session.run("echo bye; exit 3", timeout=5)
    assert r.output == "bye\n" and r.exit_code == 3 and r.restarted
    assert "The shell exited (status 3)" in r.notice and "reset" in r.notice
    r = await session.run("pwd; echo \"[$KEEP]\"", timeout=5)
    assert r.output == "/mnt/data\n[]\n" and not r.restarted


async def test_output_keeps_head_and_tail(session):
    r = await session.run("seq 1 100000", timeout=10)
    assert r.output.startswith("1\n2\n3\n") and r.output.endswith("99999\n100000\n")
    assert r.dropped_chars > 500_000 and len(r.output) < 1100


async def test_the_sandbox_survives_kill_all_and_background_jobs_stay(session):
    r = await session.run("sleep 300 & echo started", timeout=5)
    assert r.output == "started\n"
    r = await session.run("jobs | wc -l; kill -9 -1; echo after", timeout=5)
    assert r.output.startswith("1\nafter\n")
    r = await session.run("echo alive; ps -e -o comm= | grep -c sleep", timeout=5)
    assert r.output.endswith("alive\n0\n")  # bash may first report the killed job


async def test_concurrent_commands_take_turns(session):
    import asyncio

    a, b = await asyncio.gather(session.run("echo a1; sleep 0.3; echo a2", timeout=5),
                                session.run("echo b1; echo b2", timeout=5))
    assert (a.output, b.output) == ("a1\na2\n", "b1\nb2\n")


async def test_a_cancelled_command_leaves_a_new_shell_and_a_notice(session):
    import asyncio

    await session.run("cd /tmp; KEEP=yes", timeout=5)
    task = asyncio.ensure_future(session.run("sleep 60", timeout=30))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    r = await session.run("pwd; echo \"[$KEEP]\"", timeout=5)
    assert r.output == "/mnt/data\n[]\n" and "previous command was interrupted" in r.notice


async def test_execute_runs_a_separate_process_in_the_same_sandbox(session):
    await session.run("echo shared > /tmp/state; cd /tmp; V=1", timeout=5)
    box = session.box
    r = await box.execute(["bash", "-c", "cat /tmp/state; pwd; echo \"[$V]\"; echo err >&2; exit 4", "s"],
                          timeout=5, split_stderr=True)
    assert (r.exit_code, r.output, r.stderr) == (4, "shared\n/mnt/data\n[]\n", "err\n")
    r = await box.execute(["sleep", "30"], timeout=1)
    assert r.timed_out and r.exit_code is None


NOBODY_SCRIPT = """
import asyncio, json, os, sys
from glm_agent.sandbox import SandboxConfig
from glm_agent.sandbox.session import LiveSandbox, ShellSession

async def main(ws, writable):
    cfg = SandboxConfig(timeout=20, nprocs=None, writable_root=writable, root_size_mb=64)
    box = LiveSandbox(cfg, ws)
    s = ShellSession(box)
    try:
        outs = []
        for cmd, timeout in [("cd /tmp; X=7", 10), ("echo $(pwd) $X $(id -u)", 10), ("sleep 30", 1), ("echo $X", 10),
                             ("echo made > /usr/local/bin/glm-nobody-x 2>&1 && cat /usr/local/bin/glm-nobody-x", 10)]:
            r = await s.run(cmd, timeout=timeout)
            outs.append([r.output, r.timed_out])
        return outs
    finally:
        s.close()
        box.close()

print(json.dumps([os.getuid()] + [asyncio.run(main(sys.argv[1], w)) for w in (False, True)]))
"""


def test_the_session_and_the_writable_root_work_when_glm_agent_is_not_root(tmp_path):
    """The whole host side (supervisor, session, rootfs launcher) as uid 65534."""
    import json
    import os

    from as_nobody import run_as_nobody

    out = run_as_nobody(NOBODY_SCRIPT, "glm-session-nobody-")
    assert out.returncode == 0, out.stderr
    uid, read_only, writable = json.loads(out.stdout.strip().splitlines()[-1])
    assert uid == 65534
    for outs in (read_only, writable):
        assert outs[1][0].split()[:2] == ["/tmp", "7"] and outs[2][1] and outs[3][0] == "7\n", outs
    assert read_only[1][0].split()[2] == "65534" and "Read-only file system" in read_only[4][0]
    assert writable[1][0].split()[2] == "0" and writable[4][0] == "made\n"  # root inside its own namespace
    assert not os.path.exists("/usr/local/bin/glm-nobody-x")


async def test_quick_processes_always_report_their_status(session):
    import asyncio

    box = session.box
    await session.run("true", timeout=5)  # starts the sandbox
    results = await asyncio.gather(*(box.execute(["sh", "-c", f"exit {i % 7}"], timeout=10) for i in range(40)))
    assert [r.exit_code for r in results] == [i % 7 for i in range(40)]
