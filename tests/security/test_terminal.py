"""Terminal injection: escape sequences and other controls in what a model or a tool produces
never reach the user's terminal raw, through `chat` (a real pseudo-terminal) or `run`.

The hostile text is everywhere at once: the model's streamed answer, tool arguments, a tool's
result, an attachment name, an exception message, an unknown tool's name, a citation's title
and URL. Each must be shown visibly (`^[]0;pwned^G`), not obeyed and not silently dropped.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from glm_agent.core.terminal import UNSAFE_CHARS, safe_json, safe_markdown, safe_text

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from hostile_terminal_tools import ATTACKS, HOSTILE  # noqa: E402

TOOLS = "hostile_terminal_tools:fetch_page,hostile_terminal_tools:explode"

# Raw sequences that must never reach the terminal. Rich's own styling (SGR), cursor moves and
# its OSC 8 links end in ESC \ and never carry these; prompt_toolkit's own backspaces stand
# alone (after its prompt), never next to BEL or DEL as in the attack.
FORBIDDEN = [
    "\x1b]0;", "\x1b[2J", "\x1b]52;", "\x1b]8;;http://evil", "\x07", "\x08\x7f", "\x7f",
    "\x9b", "\x9c", "\x9d", "\u202e", "\u202c", "\r" + "overwritten",
]


def env_for(tmp_path: Path, color: bool = True) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
    env["GLM_AGENT_HOME"] = str(tmp_path / "home")
    env["COLUMNS"] = "160"
    env["TERM"] = "xterm-256color"  # a terminal that rich styles for: our own escapes stay
    env["PROMPT_TOOLKIT_NO_CPR"] = "1"
    env.pop("NO_COLOR", None)
    if not color:
        env["NO_COLOR"] = "1"
    return env


def hostile_script(tmp_path: Path) -> Path:
    turns = [
        {"content": f"Let me look. {HOSTILE}", "tool_calls": [
            {"name": "fetch_page", "arguments": {"url": f"http://x.example/\n{HOSTILE}"}},
            {"name": "explode", "arguments": {"why": HOSTILE}},
            {"name": f"nope{ATTACKS['title']}{ATTACKS['c1']}", "arguments": {}},
        ]},
        f"Final answer {HOSTILE} per 【1†source】 and &#x202E;reversed&#x202C; &#27;]0;pwned&#7; done.",
    ]
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns), encoding="utf-8")
    return path


def found_raw(output: str) -> list[str]:
    return [repr(seq) for seq in FORBIDDEN if seq in output]


# ---- the function --------------------------------------------------------------------------


def test_safe_text_shows_every_control_visibly_and_keeps_newlines_and_tabs():
    out = safe_text("a\tb\nc" + UNSAFE_CHARS)
    assert out.startswith("a\tb\nc")
    assert not set(out) & set(UNSAFE_CHARS)
    assert safe_text("\x1b]0;x\x07") == "^[]0;x^G"
    assert safe_text("\x9b1m") == "\\x9b1m"
    assert safe_text("\u202eevil") == "<U+202E>evil"
    assert safe_text("line\r\nnext\rover") == "line\nnext^Mover"
    assert safe_text("中文 · émoji 📎 — ok") == "中文 · émoji 📎 — ok"  # printable text is untouched


def test_safe_markdown_keeps_character_references_from_decoding_into_controls():
    from rich.console import Console
    from rich.markdown import Markdown

    text = "&#x202E;rev &#27;]0;t&#7; &rlm; &#x9b;1m &amp; &lt;ok&gt; `&#x202e;` &#65;"
    buffer = io.StringIO()
    Console(file=buffer, force_terminal=True, width=120).print(Markdown(safe_markdown(text)))
    rendered = buffer.getvalue()
    assert not {"\u202e", "\u200f", "\x9b", "\x07"} & set(rendered)
    assert "\x1b]0;" not in rendered
    assert "&" in rendered and "<ok>" in rendered and "A" in rendered  # harmless references still decode


def test_safe_json_is_the_same_json_value_without_raw_controls():
    value = {"k\u202e": HOSTILE, "n": "中文"}
    text = safe_json(json.dumps(value, ensure_ascii=False))
    assert not set(text) & set(UNSAFE_CHARS)
    assert json.loads(text) == value and "中文" in text


def test_citation_links_from_hostile_pages_are_inert():
    from glm_agent.tools.browser.citations import render_citations

    cites = {
        "1": {"title": f"T {ATTACKS['title']}] (x)[y", "url": f"http://a.example/p q(r){ATTACKS['link']}"},
        "2": {"title": "script", "url": "javascript:alert(1)"},
        "3": {"title": "file", "url": "file:///etc/passwd"},
    }
    out = render_citations("a 【1†s】 b 【2†s】 c 【3†s】", cites)
    assert not set(out) & set(UNSAFE_CHARS)
    link = re.search(r"\[([^\]]*)\]\((\S+)\)", out)
    assert link and link.group(2).startswith("http://a.example/p%20q%28r%29%1B")  # one intact target
    assert "](javascript:" not in out and "](file:" not in out  # only http(s) becomes a link
    text = render_citations("【1†s】", cites, style="text")
    assert not set(text) & set(UNSAFE_CHARS)


# ---- the terminals -------------------------------------------------------------------------


def hostile_session_files(tmp_path: Path) -> list[tuple[Path, str]]:
    """Session files whose field names and values carry escapes (quoted in /load's errors)."""
    folder = tmp_path / "sessions"
    folder.mkdir()
    files = {  # name: (content, what the error says)
        "a.json": ({"format": 1, "messages": [], ATTACKS["title"]: 1}, "unknown field"),
        "b.json": ({"format": 1, "messages": [], "session_id": ATTACKS["clipboard"]}, "letters, digits"),
        "c.json": ({"format": ATTACKS["c1"], "messages": []}, "unsupported session"),
        "d.json": ({"format": 1, "messages": [], "workspace": f"/tmp/x{ATTACKS['link']}"}, "cannot choose"),
        "e.json": ({"format": 1, "messages": [{"role": ATTACKS["bidi"], "content": "x"}]}, "Input tag"),
    }
    for name, (payload, _) in files.items():
        (folder / name).write_text(json.dumps(payload), encoding="utf-8")
    return [(folder / name, needle) for name, (_, needle) in files.items()]


def test_chat_never_lets_hostile_sequences_reach_the_terminal(tmp_path):
    pexpect = pytest.importorskip("pexpect")
    session_files = hostile_session_files(tmp_path)
    log = io.BytesIO()
    child = pexpect.spawn(
        sys.executable,
        ["-m", "glm_agent", "chat", "--model", f"scripted:{hostile_script(tmp_path)}", "--tools", TOOLS],
        env=env_for(tmp_path), timeout=60, dimensions=(50, 160),
    )
    child.logfile_read = log
    try:
        child.expect("/help")
        child.expect("›".encode())
        child.sendline(b"read the page")
        child.expect(b"Final answer")
        child.expect(b"done")
        child.expect("›".encode())
        for path, needle in session_files:
            child.sendline(f"/load {path}".encode())
            child.expect(needle.encode())
            child.expect("›".encode())
        child.sendline(b"/exit")
        child.expect(b"bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    raw = log.getvalue().decode("utf-8", "surrogateescape")
    assert not found_raw(raw), found_raw(raw)
    assert "\udc9b" not in raw and "\udc9d" not in raw  # no lone 8-bit C1 bytes either
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x1b]*\x1b\\|\s+", "", raw)  # our styling, wrapping
    for visible in ("^[]0;pwned^G", "^[[2J", "^[]52;c;cHduZWQ=^G", "\\x9b31m", "<U+202E>evil",
                    "visible^Moverwritten", "^G^H^?", "nope^[]0;pwned^G", "boom", "report^[]0;pwned^G.txt",
                    "Cited^()0;pwned^G<U+202E>", "&#x202E;reversed", "&#27;]0;pwned&#7;",
                    "'^[]0;pwned^G':unknownfield",
                    "/tmp/x^[]8;;http://evil.example^Gclick"):
        assert visible.replace(" ", "") in shown, visible  # shown as text, not dropped


def test_run_prints_hostile_answers_as_visible_text(tmp_path):
    script = hostile_script(tmp_path)
    base = [sys.executable, "-m", "glm_agent", "run", "read the page", "--model", f"scripted:{script}", "--tools", TOOLS]
    out = subprocess.run(base, capture_output=True, env=env_for(tmp_path, color=False), timeout=120)
    assert out.returncode == 0, out.stderr
    stdout = out.stdout.decode("utf-8", "surrogateescape")
    assert "\x1b" not in stdout and not found_raw(stdout), found_raw(stdout)
    assert "Final answer ^[]0;pwned^G ^[[2J" in stdout and "<U+202E>evil<U+202C>" in stdout

    out = subprocess.run([*base, "--json"], capture_output=True, env=env_for(tmp_path, color=False), timeout=120)
    stdout = out.stdout.decode("utf-8", "surrogateescape")
    assert not set(stdout) & set(UNSAFE_CHARS), found_raw(stdout)
    events = [json.loads(line) for line in stdout.splitlines()]  # exact JSON Lines: escapes in JSON's own \\u form
    final = events[-1]
    assert final["type"] == "final" and HOSTILE in final["text"]
    result = next(e for e in events if e["type"] == "tool_result" and e["call"]["name"] == "fetch_page")
    assert HOSTILE in result["result"]["content"]
