"""The sandbox itself, driven through one-shot commands (fast: no kernel)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading

import pytest

from glm_agent.sandbox import (
    Sandbox,
    SandboxConfig,
    SandboxUnavailableError,
    bwrap_available,
    run_command,
)
from glm_agent.sandbox.bwrap import _probe
from glm_agent.sandbox.procs import pid_alive

requires_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")


def run(cmd, ws, cfg, **kw):
    return asyncio.run(run_command(cmd, ws, cfg, **kw))


def test_config_validates_and_normalises():
    cfg = SandboxConfig(rw_binds=["/a:/b"], env={"A": "1"})
    assert cfg.rw_binds == ("/a:/b",) and cfg.env == (("A", "1"),)
    assert SandboxConfig.split_bind("/a:/b") == ("/a", "/b")
    assert SandboxConfig.split_bind("/a") == ("/a", "/a")
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxConfig(memory_mb=0)
    with pytest.raises(ValueError, match="absolute"):
        SandboxConfig(workspace_mount="data")


def test_missing_bubblewrap_says_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("GLM_AGENT_BWRAP", str(tmp_path / "no-bwrap"))
    _probe.cache_clear()
    with pytest.raises(SandboxUnavailableError) as err:
        Sandbox(SandboxConfig(), tmp_path)
    assert "apt-get install bubblewrap" in str(err.value) and "--unsafe-no-sandbox" in str(err.value)
    # Opting in runs with resource limits only.
    res = run("ulimit -v; pwd", tmp_path, SandboxConfig(unsafe_no_sandbox=True, memory_mb=512))
    assert res.ok and res.output.split() == [str(512 * 1024), str(tmp_path.resolve())]


@requires_bwrap
def test_layout_workspace_at_mnt_data_and_readonly_root(tmp_path, config):
    res = run("pwd; echo hi > /mnt/data/a.txt; touch /etc/x 2>&1; touch /usr/x 2>&1; echo 中文输出",
              tmp_path, config)
    lines = res.output.splitlines()
    assert lines[0] == "/mnt/data"
    assert "Read-only file system" in lines[1] and "Read-only file system" in lines[2]
    assert lines[3] == "中文输出"
    assert (tmp_path / "a.txt").read_text() == "hi\n"
    assert not os.path.exists("/etc/x") and not os.path.exists("/usr/x")


@requires_bwrap
def test_writing_outside_the_workspace_is_refused(tmp_path, config):
    ws = tmp_path / "ws"
    ws.mkdir()
    outside = tmp_path / "outside.txt"
    res = run(f"echo x > {outside} 2>&1; echo x > /sys/fs/cgroup/pids/cgroup.procs 2>&1; echo done",
              ws, config)
    assert res.output.strip().endswith("done")
    assert not outside.exists()


@requires_bwrap
def test_host_home_secrets_and_environment_are_hidden(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text("hunter2")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GLM_TEST_API_KEY", "sk-secret")
    cfg = SandboxConfig(timeout=5)  # default hidden paths are read from $HOME now
    ws = tmp_path / "ws"
    ws.mkdir()
    res = run(f"cat {home}/secret.txt 2>&1; echo \"key=$GLM_TEST_API_KEY\"; cat ~/secret.txt 2>&1; ls -A /root",
              ws, cfg)
    assert "hunter2" not in res.output and "sk-secret" not in res.output
    assert "key=\n" in res.output
    visible = set(res.output.split("key=", 1)[1].split("\n", 2)[2].split())
    # Only the interpreter folders the sandbox binds back (pyenv, a venv under $HOME) are in
    # /root: exactly the list from Sandbox.rebound_folders().
    allowed = {p.split("/")[2] for p in Sandbox(cfg, ws).rebound_folders() if p.startswith("/root/")}
    assert visible == allowed


@requires_bwrap
def test_network_is_unreachable(tmp_path, config):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    res = run(f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED || echo REFUSED", tmp_path, config)
    t.join()
    server.close()
    assert "REFUSED" in res.output and "CONNECTED" not in res.output
    assert not accepted


@requires_bwrap
def test_fork_bomb_is_contained_and_cleaned_up(tmp_path, config):
    res = run(":(){ :|:& };: ; sleep 1; echo survived", tmp_path, config, timeout=3)
    assert "Resource temporarily unavailable" in res.output or res.timed_out
    after = run("echo fine", tmp_path, config)
    assert after.ok and after.output == "fine\n"


@requires_bwrap
def test_timeout_kills_every_process(tmp_path, config):
    res = run("sleep 300 & sleep 300 & echo $$; sleep 300", tmp_path, config, timeout=1)
    assert res.timed_out and res.exit_code is None
    assert res.duration < 4
    # No `sleep 300` survives anywhere on the host.
    leftovers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid_alive(int(pid)):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x00300\x00":
                        leftovers.append(pid)
            except OSError:
                pass
    assert not leftovers


@requires_bwrap
def test_huge_output_is_bounded(tmp_path, config):
    res = run("head -c 100000000 /dev/zero | tr '\\0' x; echo; echo END", tmp_path, config,
              timeout=20, max_capture_chars=10_000)
    assert res.ok
    assert len(res.output) < 12_000 and res.dropped_chars > 99_000_000
    assert res.output.rstrip().endswith("END")


@requires_bwrap
def test_memory_limit_applies(tmp_path, config):
    res = run("python3 -c 'bytearray(2 * 1024**3)' 2>&1 | tail -1", tmp_path, config)
    assert "MemoryError" in res.output
