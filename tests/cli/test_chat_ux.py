"""The chat terminal as a new user meets it, in a pseudo-terminal: the busy spinner with its
phases, the speed line after an answer, Ctrl-C that leaves a clean screen, Tab completion of
slash commands, Alt-Enter for multi-line input, and chats that save themselves (`sessions`,
`chat --continue`). What the user sees is checked on the screen as a terminal draws it
(`vt.py`), not only in the raw bytes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from vt import render

pexpect = pytest.importorskip("pexpect")

HERE = Path(__file__).parent
ROWS, COLS = 30, 90
SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


def env_for(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["GLM_AGENT_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = str(COLS)
    env["NO_COLOR"] = "1"
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    return env


class Recorder:
    """Everything the program wrote to the terminal."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, data: str) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        pass

    @property
    def raw(self) -> str:
        return "".join(self.parts)

    def screen(self) -> str:
        return render(self.raw, ROWS, COLS)


def spawn(args: list[str], tmp_path: Path) -> tuple[pexpect.spawn, Recorder]:
    child = pexpect.spawn(sys.executable, args, env=env_for(tmp_path), encoding="utf-8", timeout=60,
                          dimensions=(ROWS, COLS), cwd=str(tmp_path))
    log = Recorder()
    child.logfile_read = log
    return child, log


def chat(tmp_path: Path, turns: list, *extra: str) -> tuple[pexpect.spawn, Recorder]:
    script = tmp_path / "script.json"
    script.write_text(json.dumps(turns), encoding="utf-8")
    return spawn(["-m", "glm_agent", "chat", "--model", f"scripted:{script}", *extra], tmp_path)


def leave(child: pexpect.spawn) -> None:
    child.sendeof()
    child.expect("bye")
    child.expect(pexpect.EOF)


def spinner_labels(raw: str) -> list[str]:
    """The spinner's labels in the order they first appeared."""
    seen: list[str] = []
    for label in re.findall(rf"[{SPINNER}] ([^·\r\n\x1b]+?) · \d+s", raw):
        if label not in seen:
            seen.append(label)
    return seen


def test_the_spinner_names_each_phase_and_the_speed_follows_the_answer(tmp_path):
    # ux_helpers.py: a model that reports loading / prompt / generating with a pause in each,
    # then calls a slow tool, then answers; run by the real ChatApp in a real terminal.
    child, log = spawn([str(HERE / "ux_helpers.py"), str(tmp_path / "ws")], tmp_path)
    try:
        child.expect("›")
        child.sendline("add 2 and 3")
        child.expect(r"loading the model · 1s")  # the elapsed time counts
        child.expect(r"reading the prompt \(1,234 tokens\) · 1s")
        child.expect(r"thinking · 1s")  # generating, nothing visible yet
        child.expect(r"running `slow_sum` · 1s")
        child.expect("2 \\+ 3 = 5")
        child.expect("computed slowly")
        child.expect("tokens/s")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    labels = spinner_labels(log.raw)
    order = ["loading the model", "reading the prompt (1,234 tokens)", "thinking", "running `slow_sum`", "writing"]
    assert [label for label in labels if label in order] == order, labels
    screen = log.screen()
    # The spinner goes away with the turn; the answer and the speed line stay, once.
    assert not any(ch in screen for ch in SPINNER), screen
    assert screen.count("The sum is 5, computed slowly.") == 1, screen
    # 12 + 30 tokens; decoding: 1.5 s + 1.5 s + the words; prefill: 2 x 1,234 tokens in 2 x 1.5 s.
    speed = re.search(r"^42 tokens · ([\d.]+) tokens/s · prompt 1,300 tokens \(read at (\d+) tokens/s\) · ([\d.]+)s$",
                      screen, re.M)
    assert speed, screen
    assert 8 < float(speed.group(1)) < 15 and 600 < int(speed.group(2)) < 900 and float(speed.group(3)) > 9


def test_the_speed_line_of_a_scripted_model_comes_from_its_usage(tmp_path):
    child, log = chat(tmp_path, ["Some words " * 40], "--tools", "")
    try:
        child.expect("›")
        child.sendline("talk")
        child.expect("tokens/s")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    # ScriptedModel counts a token per 4 characters: 440 characters.
    assert re.search(r"^110 tokens · [\d.]+ tokens/s · prompt 1 token · [\d.]+s$", log.screen(), re.M), log.screen()


def test_ctrl_c_leaves_every_line_once_and_interrupted_on_a_line_of_its_own(tmp_path):
    long_answer = "First line of the answer.\n\n" + "\n\n".join(f"Paragraph {i} " + "w " * 30 for i in range(60))
    turns = [
        long_answer,
        {"content": "", "tool_calls": [{"name": "slow_sum", "arguments": {"a": 1, "b": 2}}]},
        "still here",
    ]
    child, log = chat(tmp_path, turns, "--tools", "ux_helpers:slow_sum")
    try:
        child.expect("›")
        child.sendline("talk a lot")
        child.expect("Paragraph 4 ")  # several lines on the screen, more coming
        child.sendintr()
        child.expect("interrupted")
        child.expect("›")
        child.sendline("add slowly")
        child.expect("running `slow_sum`")
        child.sendintr()  # while the tool runs: no live text on the screen
        child.expect("interrupted")
        child.expect("›")
        child.sendline("are you there?")
        child.expect("still here")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    screen = log.screen()
    lines = screen.splitlines()
    assert "^C" not in screen, screen
    assert lines.count("interrupted") == 2, screen
    assert lines.count("First line of the answer.") == 1, screen
    shown = [line for line in lines if line.startswith("Paragraph ")]
    assert shown and len(shown) == len(set(shown)), screen  # no line drawn twice
    assert lines.index(shown[-1]) < lines.index("interrupted")
    assert "still here" in lines


def test_tab_completes_slash_commands_and_alt_enter_starts_a_new_line(tmp_path):
    child, log = chat(tmp_path, ["ok, two lines read", "and three"], "--tools", "")
    saved = tmp_path / "saved.json"
    try:
        child.expect("›")
        child.send("/he")
        child.expect("this help")  # the completion menu, while typing
        child.send("\t")
        child.send("\r")
        child.expect("Alt-Enter")  # the help itself
        child.expect("›")
        child.send("first line")
        child.send("\x1b\r")  # Alt-Enter, as terminals send it
        child.send("second line")
        child.send("\x1b")
        child.send("\r")  # Esc, then Enter
        child.send("third line\r")
        child.expect("ok, two lines read")
        child.expect("›")
        child.send("/sa\t")
        child.send(f" {saved}\r")
        child.expect("saved 2 messages")
        child.expect("›")
        child.send("/lo")
        child.send("\t")
        child.send(" " + str(tmp_path / "sav") + "\t")  # file names complete after /load
        child.expect("saved.json")
        child.send("\r")
        child.expect("loaded 2 messages")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    messages = json.loads(saved.read_text(encoding="utf-8"))["messages"]
    assert messages[0] == {"role": "user", "content": "first line\nsecond line\nthird line"}
    screen = log.screen()
    assert "› /help" in screen and f"› /save {saved}" in screen
    assert "› first line\n… second line\n… third line" in screen  # continuation lines are marked


# ---- sessions that keep themselves -----------------------------------------------------------


def glm_agent(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glm_agent", *args], env=env_for(tmp_path), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)


def saved_chats(tmp_path: Path) -> list[Path]:
    root = tmp_path / "home" / "sessions"
    return sorted(root.iterdir()) if root.exists() else []


def test_each_chat_saves_itself_and_continue_goes_on_with_the_last(tmp_path):
    child, _ = chat(tmp_path, ["the first answer"], "--tools", "")
    try:
        child.expect("›")
        child.sendline("my first question")
        child.expect("the first answer")
        child.expect("›")
        # Saved after the turn, not only on the way out: a chat killed now keeps it.
        files = saved_chats(tmp_path)
        assert len(files) == 1 and files[0].suffix == ".json", files
        assert json.loads(files[0].read_text(encoding="utf-8"))["messages"][0]["content"] == "my first question"
        leave(child)
    finally:
        child.close(force=True)
    assert saved_chats(tmp_path) == files  # no empty workspace folder beside it
    first = files[0]

    listed = glm_agent(tmp_path, "sessions")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if first.stem in line)
    assert "my first question" in row and "scripted:script.json" in row and re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d", row)

    child, _ = chat(tmp_path, ["the second answer"], "--tools", "", "--continue")
    try:
        child.expect(f"continuing {re.escape(first.stem)} · 2 messages · last asked: my first question")
        child.expect("›")
        child.sendline("and a second one")
        child.expect("the second answer")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    assert saved_chats(tmp_path) == [first]  # the same chat, written in place
    messages = json.loads(first.read_text(encoding="utf-8"))["messages"]
    assert [m["content"] for m in messages] == ["my first question", "the first answer", "and a second one",
                                                "the second answer"]


def test_clear_starts_a_new_saved_chat_and_sessions_lists_both_newest_first(tmp_path):
    child, _ = chat(tmp_path, ["answer number one", "answer number two"], "--tools", "")
    try:
        child.expect("›")
        child.sendline("question one")
        child.expect("answer number one")
        child.expect("›")
        child.sendline("/clear")
        child.expect("conversation cleared")
        child.expect("›")
        child.sendline("question two")
        child.expect("answer number two")
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    files = saved_chats(tmp_path)
    assert len(files) == 2 and all(f.suffix == ".json" for f in files), files
    listed = glm_agent(tmp_path, "sessions").stdout.splitlines()
    prompts = [line for line in listed if "question" in line]
    assert ["question two" in prompts[0], "question one" in prompts[1]] == [True, True], listed


def test_a_chat_where_nothing_was_asked_leaves_nothing_and_continue_says_there_is_none(tmp_path):
    child, _ = chat(tmp_path, ["unused"], "--tools", "python")
    try:
        child.expect("›")
        child.sendline("/help")
        child.expect("Ctrl-D works too")  # the help itself, not the echo of the typed line
        child.expect("›")
        leave(child)
    finally:
        child.close(force=True)
    assert saved_chats(tmp_path) == []
    resumed = glm_agent(tmp_path, "chat", "--model", "scripted:script.json", "--continue")
    assert resumed.returncode != 0 and "no saved chat to continue" in resumed.stderr, resumed
    assert "Traceback" not in resumed.stderr + resumed.stdout
    listed = glm_agent(tmp_path, "sessions")
    assert listed.returncode == 0 and "no saved chats" in listed.stdout


def test_sessions_shows_a_hostile_session_file_as_plain_text(tmp_path):
    # Saved chats are untrusted: a file someone put there cannot drive the terminal.
    root = tmp_path / "home" / "sessions"
    root.mkdir(parents=True)
    payload = {"format": 1, "session_id": "evil", "model": "m\x1b]0;owned\x07\x1b[2J",
               "messages": [{"role": "user", "content": "hi\x1b[31m red \x9b2J\r\nfake row"}]}
    (root / "evil.json").write_text(json.dumps(payload), encoding="utf-8")
    (root / "name\x1b]0;owned\x07\x1b[2J.json").write_text(json.dumps(payload), encoding="utf-8")  # its name too
    (root / "broken.json").write_text("{", encoding="utf-8")
    listed = glm_agent(tmp_path, "sessions")
    assert listed.returncode == 0
    assert not any(ch in listed.stdout for ch in "\x1b\x9b\x07\r"), repr(listed.stdout)
    assert "hi" in next(line for line in listed.stdout.splitlines() if "evil" in line)  # one row
    assert "broken.json" in listed.stderr


# ---- the spinner's states, on a clock the test turns -----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_spinner_line_follows_the_phases_with_a_bar_while_the_model_is_prepared():
    from glm_agent.cli.activity import Activity
    from glm_agent.core.progress import ModelProgress

    clock = Clock()
    activity = Activity(clock)

    def line() -> str:
        return activity.line().plain[2:]  # without the spinner frame

    activity.step_started()
    activity.on_progress(ModelProgress("loading"))
    clock.now += 3
    assert line() == "loading the model · 0s"  # the phase's own seconds start when it is first shown
    clock.now += 3
    assert line() == "loading the model · 3s"
    activity.on_progress(ModelProgress("preparing", done=0, total=100))
    assert line() == "preparing the model, first use only · 0s · ╺" + "─" * 19 + " 0%"
    clock.now += 30
    activity.on_progress(ModelProgress("preparing", done=42, total=100, elapsed_s=30))
    # The percentage moves on; the phase's seconds go on counting.
    assert line() == "preparing the model, first use only · 30s · " + "━" * 8 + "╺" + "─" * 11 + " 42%, about 41 s left"
    activity.on_progress(ModelProgress("preparing", done=100, total=100, elapsed_s=72))
    assert line() == "loading the model · 0s"  # the stored model is read next
    activity.on_progress(ModelProgress("preparing"))  # another process is preparing it: no size known
    assert line() == "preparing the model, first use only · 0s"
    activity.on_progress(ModelProgress("prompt", tokens=2000))
    clock.now += 4
    assert line() == "reading the prompt (2,000 tokens) · 0s"
    activity.on_progress(ModelProgress("generating"))
    clock.now += 2
    assert line() == "thinking · 0s"
    activity.text()
    assert line() == "writing · 0s"
    clock.now += 2
    assert line() == "thinking · 0s"  # nothing written for a while: held back, or thinking
    activity.model_finished({"prompt_tokens": 2000, "completion_tokens": 50})
    activity.tool_started("c1", "python")
    activity.tool_started("c2", "shell\x1b[2J")
    assert line() == "running `python`, `shell^[[2J` · 0s"  # a tool's name cannot drive the terminal
    activity.tool_finished("c1")
    activity.tool_finished("c2")
    # 50 tokens in the 4 s since the first token; 2,000 prompt tokens read in 4 s.
    assert activity.summary() == "50 tokens · 12.5 tokens/s · prompt 2,000 tokens (read at 500 tokens/s) · 44.0s"


def test_a_backend_that_reports_no_usage_gets_only_the_time():
    from glm_agent.cli.activity import Activity

    clock = Clock()
    activity = Activity(clock)
    activity.step_started()
    activity.text()
    clock.now += 2.5
    activity.model_finished({})
    assert activity.summary() == "2.5s"


async def test_a_local_model_tells_the_chat_what_it_is_doing_from_its_worker_thread():
    # The real decoder with a small real model: its phases reach the spinner's Activity
    # (reported from the model's worker thread), and the speed line has real numbers.
    from glm_agent.agent.loop import Agent
    from glm_agent.cli.activity import Activity
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.core.events import FinalAnswer, StepStarted
    from glm_agent.core.progress import progress_handler
    from glm_agent.models.local import LocalModel

    model = LocalModel("smollm2", dtype="float32", progress=False)
    agent = Agent(model, settings=GenerationSettings(max_new_tokens=12))
    activity = Activity()
    seen: list[tuple[str, str]] = []

    def heard(progress) -> None:
        activity.on_progress(progress)
        seen.append((progress.phase, activity.label()))

    try:
        with progress_handler(heard):
            async for event in agent.stream("What is the capital of France?"):
                if isinstance(event, StepStarted):
                    activity.step_started()
                elif isinstance(event, FinalAnswer):
                    activity.model_finished(agent.run_usage)
    finally:
        await agent.aclose()
        await model.aclose()
    phases = [phase for phase, _ in seen]
    assert phases[0] == "loading" and phases[-2:] == ["prompt", "generating"], seen
    labels = dict(seen)
    assert labels["loading"] == "loading the model"
    assert re.fullmatch(r"reading the prompt \(\d+ tokens\)", labels["prompt"]), labels
    assert re.fullmatch(r"\d+ tokens · [\d.]+ tokens/s · prompt \d+ tokens \(read at \d+ tokens/s\) · [\d.]+s",
                        activity.summary()), activity.summary()
