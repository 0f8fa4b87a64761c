"""Session files that are not what they should be: every problem is one clear SessionFileError
naming the file and the field, the agent is left exactly as it was, and saves clean up the temp
files that a killed saver left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from glm_agent.agent import Agent, SessionFileError
from glm_agent.models.scripted import ScriptedModel


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GLM_AGENT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def talked_agent() -> Agent:
    agent = Agent(ScriptedModel(["first answer"]), system="keep me", session_id="mine")
    agent.run_sync("first question")
    return agent


def state(agent: Agent) -> tuple:
    return (list(agent.history), agent.system, agent.session_id, agent._workspace)


def good_payload(tmp_path: Path) -> dict:
    other = Agent(ScriptedModel(["their answer"]), system="their system", session_id="theirs")
    other.run_sync("their question")
    return json.loads(other.save(tmp_path / "good.json").read_text(encoding="utf-8"))


def refused(agent: Agent, path: Path, *needles: str) -> str:
    before = state(agent)
    with pytest.raises(SessionFileError) as err:
        agent.load(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, message
    assert state(agent) == before  # validated whole before anything changed
    return message


@pytest.mark.parametrize("content,needle", [
    ("[1, 2]", "top level is a JSON list"),
    ('"a string"', "top level is a JSON string"),
    ("42", "top level is a JSON number"),
    ("null", "top level is a JSON null"),
    ("", "invalid JSON"),
    ("{not json", "invalid JSON"),
    ('{"format": 1}{', "invalid JSON"),
    ('{"messages": []}', "field 'format' is missing"),
    ('{"format": 99, "messages": []}', "unsupported session format 99"),
    ('{"format": "1", "messages": []}', "unsupported session format '1'"),
    ('{"format": true, "messages": []}', "unsupported session format True"),
])
def test_files_that_are_not_session_objects(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    refused(talked_agent(), path, needle)


@pytest.mark.parametrize("field,value", [
    ("system", ["not", "a", "string"]),
    ("system", 7),
    ("session_id", 12),
    ("session_id", {"id": "x"}),
    ("model", 3.5),
    ("tools", "python"),
    ("tools", [1, 2]),
    ("workspace", ["x"]),
    ("messages", {"role": "user"}),
    ("messages", "hello"),
    ("unexpected_field", 1),
])
def test_every_field_is_checked_before_anything_changes(tmp_path, field, value):
    payload = good_payload(tmp_path)
    payload[field] = value
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    refused(talked_agent(), path, f"field '{field}")


@pytest.mark.parametrize("messages,field", [
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "user", "content": "ok"}, {"role": "wizard", "content": "x"}], "messages[1]"),
    ([{"role": "assistant", "content": "", "tool_calls": [{"name": "x", "arguments": "{}"}]}],
     "messages[0].tool_calls[0].arguments"),
    ([{"role": "tool", "content": "x", "name": "t"}], "messages[0].tool_call_id"),
    (["just text"], "messages[0]"),
])
def test_a_bad_message_deep_in_the_file_is_named(tmp_path, messages, field):
    payload = good_payload(tmp_path)
    payload["messages"] = payload["messages"] + messages
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    offset = len(payload["messages"]) - len(messages)
    shifted = field.replace("messages[0]", f"messages[{offset}]").replace("messages[1]", f"messages[{offset + 1}]")
    refused(talked_agent(), path, f"field '{shifted}")


def test_directories_devices_fifos_missing_files_and_odd_bytes(tmp_path):
    agent = talked_agent()
    refused(agent, tmp_path / "missing.json", "no session file")
    (tmp_path / "folder.json").mkdir()
    refused(agent, tmp_path / "folder.json", "is a directory")
    os.mkfifo(tmp_path / "fifo.json")
    refused(agent, tmp_path / "fifo.json", "device, pipe or socket")  # and does not hang
    refused(agent, Path("/dev/zero"), "device, pipe or socket")
    (tmp_path / "latin1.json").write_bytes(b'{"format": 1, "messages": [], "system": "caf\xe9"}')
    refused(agent, tmp_path / "latin1.json", "not UTF-8")
    deep = b'{"format": 1, "messages": [{"role": "assistant", "tool_calls": [{"name": "x", "arguments": {"a": ' + \
        b"[" * 100_000 + b"]" * 100_000 + b"}}]}]}"
    (tmp_path / "deep.json").write_bytes(deep)
    refused(agent, tmp_path / "deep.json", "nested too deeply")


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path, monkeypatch):
    from glm_agent.agent import session as session_module

    monkeypatch.setattr(session_module, "MAX_SESSION_BYTES", 1000)
    payload = good_payload(tmp_path)
    payload["messages"][0]["content"] = "x" * 5000
    path = tmp_path / "big.json"
    path.write_text(json.dumps(payload), encoding="utf-8")
    refused(talked_agent(), path, "too large")


def test_a_good_file_still_loads_completely(tmp_path, home):
    payload = good_payload(tmp_path)
    agent = talked_agent()
    agent.load(tmp_path / "good.json")
    assert agent.session_id == "theirs" and agent.system == "their system"
    assert [m.content for m in agent.history] == [m["content"] for m in payload["messages"]]
    assert agent.workspace == home / "sessions" / "theirs"


# ---- saving ----------------------------------------------------------------------------------


def test_save_to_a_directory_or_under_a_file_fails_cleanly(tmp_path):
    agent = talked_agent()
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError):
        agent.save(tmp_path / "folder")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        agent.save(tmp_path / "plain" / "session.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


SLOW_SAVER = textwrap.dedent("""
    import json, sys, time
    from glm_agent.agent import Agent
    from glm_agent.models.scripted import ScriptedModel

    def slow_dump(obj, f, **kw):
        f.write('{"format": 1, "messages": [')  # half a file...
        f.flush()
        print("writing", flush=True)
        time.sleep(600)  # ...and then the saver hangs until it is killed

    json.dump = slow_dump
    Agent(ScriptedModel([]), session_id="killed").save(sys.argv[1])
""")


def start_slow_saver(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def temps(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def test_a_later_save_removes_the_temp_file_of_a_killed_saver_but_not_of_a_live_one(tmp_path):
    target = tmp_path / "chat.json"
    killed = start_slow_saver(target)
    live = start_slow_saver(target)
    try:
        killed_temps = [t for t in temps(tmp_path, "chat.json") if f".{killed.pid}." in t]
        live_temps = [t for t in temps(tmp_path, "chat.json") if f".{live.pid}." in t]
        assert len(killed_temps) == 1 and len(live_temps) == 1  # temp files carry the writer's pid
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert temps(tmp_path, "chat.json") == sorted(killed_temps + live_temps)  # left behind
        # An unrelated file with a similar name, and another session's temp, are not ours.
        (tmp_path / f".chat.json.1.{killed.pid}.abcdefgh.tmp").write_text("another session's temp")
        (tmp_path / ".chat.json.notes").write_text("not a temp file")
        talked_agent().save(target)
        assert temps(tmp_path, "chat.json") == sorted(live_temps + [f".chat.json.1.{killed.pid}.abcdefgh.tmp"])
        assert (tmp_path / ".chat.json.notes").exists()
        assert json.loads(target.read_text(encoding="utf-8"))["session_id"] == "mine"
    finally:
        for proc in (killed, live):
            proc.kill()
            proc.wait()
            proc.stdout.close()
    talked_agent().save(target)  # the second saver is dead now too
    assert temps(tmp_path, "chat.json") == [f".chat.json.1.{killed.pid}.abcdefgh.tmp"]


def test_old_pidless_temp_files_are_removed_once_clearly_abandoned(tmp_path):
    old = tmp_path / ".chat.json.k3j_x9a2.tmp"  # the name earlier versions gave their temp files
    fresh = tmp_path / ".chat.json.q8w7e6r5.tmp"
    for path in (old, fresh):
        path.write_text("{half")
    an_hour_ago = time.time() - 2 * 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    talked_agent().save(tmp_path / "chat.json")
    assert not old.exists() and fresh.exists()
