"""The OS suite's machine (issue causes 1-5 and "needs network"): one sandbox per task with a
writable copy-on-write root, /root as home and working directory, init -> start (in the agent's
shell) -> agent -> checks in that order, in the same machine; the host is never touched."""

from __future__ import annotations

import json
import os

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.evals.suites import make_suite
from glm_agent.evals.task import EnvironmentSetupError, UnsupportedSample
from glm_agent.sandbox import bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available() or os.geteuid() != 0,
                                reason="needs bubblewrap, and root for useradd")


def suite_of(tmp_path, *tasks):
    path = tmp_path / "tasks.json"
    path.write_text(json.dumps(list(tasks)))
    return make_suite("os", data=path)


class Result:
    def __init__(self, text):
        self.output = text
        self.messages = []


async def episode(suite, sample, tmp_path, commands, answer=None):
    ws = tmp_path / f"ws-{sample.id}"
    ws.mkdir()
    env = await suite.setup(sample, ws)
    try:
        outs = [(await env.tools[0].call({"command": c}, ToolContext(session_id="t", workspace=ws))).content
                for c in commands]
        judgement = await suite.judge(sample, env, Result(f"Answer: {answer if answer is not None else outs[-1]}"))
        return outs, judgement
    finally:
        for tool in env.tools:
            await tool.aclose()
        for cleanup in env.cleanups:
            cleanup()


def task(init=None, start=None, check=None, match=None, example=None):
    item = {"description": "t", "create": {"init": init} if init else {}}
    if start:
        item["start"] = start
    item["evaluation"] = {"match": match} if match is not None else {"check": check, "example": example}
    return item


async def test_cause1_init_writes_the_system_and_its_state_lasts_the_task(tmp_path):
    init = ("echo tool > /usr/local/bin/r1tool && chmod +x /usr/local/bin/r1tool && mkdir -p /data /working "
            "&& echo d > /data/f && echo w > /working/w && echo t > /testfile && echo v > /var/r1v "
            "&& useradd -m r1user && echo tmpstate > /tmp/r1state")
    suite = suite_of(tmp_path, task(init=init, match="ok"))
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, [
        "cat /usr/local/bin/r1tool /data/f /working/w /testfile /var/r1v /tmp/r1state; id -u r1user; "
        "ls -d /home/r1user; echo x > /usr/r1x && echo ok"], answer="ok")
    assert outs[0].split() == ["tool", "d", "w", "t", "v", "tmpstate", "1001", "/home/r1user", "ok"], outs[0]
    assert j.passed
    for path in ("/usr/local/bin/r1tool", "/data", "/working", "/testfile", "/var/r1v", "/usr/r1x"):
        assert not os.path.exists(path), path  # the host root is untouched
    with open("/etc/passwd") as f:
        assert "r1user" not in f.read()


async def test_cause2_the_example_runs_in_the_agents_machine(tmp_path):
    # A randomised init (only in /root, which a fresh machine also had): one right answer only
    # if the judge's example sees the agent's machine.
    init = "echo $RANDOM$RANDOM$RANDOM > /root/secret; head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \\n' >> /root/secret"
    suite = suite_of(tmp_path, task(init=init, check=[None, {"file": "check/string-match.py"}],
                                    example="cat /root/secret"))
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, ["cat /root/secret"])
    assert j.passed, j.detail


async def test_cause3_the_shell_starts_in_root_as_home(tmp_path):
    suite = suite_of(tmp_path, task(match="/root /root"))
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, ["echo $(pwd) $HOME"])
    assert outs[0] == "/root /root" and j.passed


async def test_cause4_start_runs_in_the_agents_shell_and_its_failure_is_reported(tmp_path):
    suite = suite_of(tmp_path, task(init="mkdir -p /srv/app", start="cd /srv/app && TASKVAR=42 && f() { echo fn; }",
                                    match="/srv/app 42 fn"),
                     task(start="false", match="x"))
    ok, bad = suite.samples()
    outs, j = await episode(suite, ok, tmp_path, ["echo $(pwd) $TASKVAR $(f)"])
    assert outs[0] == "/srv/app 42 fn" and j.passed
    with pytest.raises(EnvironmentSetupError, match="start script failed"):
        await suite.setup(bad, tmp_path / "bad")


async def test_cause5_the_agents_shell_keeps_its_state(tmp_path):
    suite = suite_of(tmp_path, task(match="/var/log 5"))
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, ["cd /var/log; N=5", "echo $(pwd) $N"])
    assert outs[1] == "/var/log 5" and j.passed


@pytest.mark.parametrize("item", [
    task(init="apt-get update && apt-get install -y cowsay", match="x"),
    task(init="pip install requests", match="x"),
    task(match="x", example=None) | {"evaluation": {"check": [None, {"file": "check/integer-match.py"}],
                                                     "example": "curl -s https://example.com | wc -l"}},
])
async def test_tasks_that_need_the_network_are_unsupported(tmp_path, item):
    suite = suite_of(tmp_path, item)
    (sample,) = suite.samples()
    with pytest.raises(UnsupportedSample, match="needs the network"):
        await suite.setup(sample, tmp_path / "ws")


@pytest.mark.parametrize("item", [
    task(init="apt update && apt install bubblewrap -y && echo '' > /root/marker", match="x"),
    task(init="apt-get -q update; apt-get install -y --no-install-recommends bubblewrap", match="x"),
    task(init="true", start="apt-get install -y bubblewrap >/dev/null", match="x"),
])
async def test_setup_installs_of_what_the_image_has_run_offline(tmp_path, item):
    # AgentBench's image downloads them; here the host's root is the image, and apt succeeds
    # offline when the package is already there at its newest version (an update only warns).
    # bubblewrap: these tests need it, and the test script installs the current one.
    suite = suite_of(tmp_path, item)
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, ["dpkg-query -W -f='${Status}' bubblewrap"], answer="x")
    assert outs[0].endswith("installed") and j.passed


async def test_the_sandbox_resolves_its_own_host_name(tmp_path):
    with open("/etc/hosts") as f:
        before = f.read()
    suite = suite_of(tmp_path, task(match="sandbox"))
    (sample,) = suite.samples()
    outs, j = await episode(suite, sample, tmp_path, ["getent hosts $(hostname) >/dev/null && hostname"])
    assert outs[0] == "sandbox" and j.passed
    with open("/etc/hosts") as f:
        assert f.read() == before  # the host's own file is untouched
