"""Attack: fill the disk through the OS eval's own `shell` tool (SandboxShellTool, used when
the suite runs without the project's ShellTool). It runs in the same persistent session as
ShellTool, so the workspace quota watcher stops it: parallel writers, files each under the
file-size limit, many small files; the model is told, the files can be deleted, and the
oracle still passes with this tool.
"""

from __future__ import annotations

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.evals.suites.os import OSEnvironment, SandboxShellTool
from glm_agent.sandbox import bwrap_available
from glm_agent.sandbox.quota import measure

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
MiB = 1024 * 1024
QUOTA_MB, MAX_FILES = 20, 300


@pytest.fixture
def env(tmp_path):
    e = OSEnvironment(tmp_path / "root", timeout=30, workspace_quota_mb=QUOTA_MB,
                      workspace_max_files=MAX_FILES)
    yield e
    e.stop()


async def call(env: OSEnvironment, command: str):
    return await SandboxShellTool(env).call({"command": command}, ToolContext(session_id="os", workspace=env.root_dir))


@pytest.mark.parametrize("command", [
    "for i in $(seq 1 8); do (n=0; while true; do n=$((n+1)); head -c 1000000 /dev/zero > p$i-$n; done) & done; wait",
    "for i in $(seq 1 8); do head -c 15000000 /dev/zero > big$i & done; wait",  # each under the file-size limit
    "i=0; while true; do echo data > f$i; i=$((i+1)); done",
])
async def test_the_fallback_shell_tool_is_stopped_by_the_quota(env, command):
    r = await call(env, command)
    assert r.data["quota_exceeded"], r.content
    assert "The workspace quota is exceeded" in r.content and "Delete files" in r.content, r.content
    usage = measure(env.root_dir)
    assert usage.bytes < 3 * QUOTA_MB * MiB and usage.files < 3 * MAX_FILES, usage
    r = await call(env, "rm -rf -- /root/* && echo cleaned && pwd")
    assert r.content.startswith("cleaned\n/root") and "within its quota again" in r.content, r.content


async def test_ordinary_commands_keep_their_output_status_and_timeout(env):
    r = await call(env, "cd /tmp; echo hi > /root/note; cat /root/note; ls /home; false")
    assert r.content.split() == ["hi", "(exit", "status", "1)"] and not r.data["quota_exceeded"], r.content
    r = await call(env, "pwd; exit 3")  # the session remembered the cd; exit ends the shell, a new one starts
    assert r.content.split()[:4] == ["/tmp", "(exit", "status", "3)"] and "new shell" in r.content, r.content
    r = await call(env, "pwd")
    assert r.content == "/root\n", r.content
    env.timeout = 1
    r = await call(env, "echo started; sleep 60")
    assert r.is_error and "started" in r.content and "timed out after 1 s" in r.content, r.content


async def test_os_oracle_with_the_fallback_tool(ev, tmp_path):
    from glm_agent.evals.oracle import OracleFactory
    from glm_agent.evals.suites import make_suite

    suite = make_suite("os", project_shell=False)
    suite._samples = [s for s in suite.samples() if s.id in {"os-0", "os-20", "os-26"}]
    summary = await ev.run_suite(suite, OracleFactory(), tmp_path, concurrency=2)
    s = summary["suites"]["os"]
    assert s["judged"] == 3 and s["score"] >= 0.99, s
