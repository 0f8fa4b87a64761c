"""Inline terminal images: protocol detection and the escape sequences written."""

from __future__ import annotations

import base64
import io
import re

import pytest
from PIL import Image
from rich.console import Console

from glm_agent.tools.image.display import detect_image_protocol, show_image_inline


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"TERM": "xterm-kitty"}, "kitty"),
        ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
        ({"TERM_PROGRAM": "ghostty", "TERM": "xterm-ghostty"}, "kitty"),
        ({"TERM_PROGRAM": "iTerm.app", "TERM": "xterm-256color"}, "iterm2"),
        ({"TERM_PROGRAM": "WezTerm"}, "iterm2"),
        ({"LC_TERMINAL": "iTerm2"}, "iterm2"),
        ({"TERM": "xterm-256color"}, None),
        ({"TERM": "dumb"}, None),
        ({}, None),
        ({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux", "KITTY_WINDOW_ID": "1"}, None),
        ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, None),
    ],
)
def test_detect(env, expected):
    assert detect_image_protocol(env) == expected


@pytest.fixture
def picture(tmp_path):
    path = tmp_path / "pic.png"
    Image.new("RGB", (100, 50), (10, 200, 30)).save(path)
    return path


def terminal():
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80), buffer


def decode_png(data: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_kitty_sequence_round_trips(picture):
    console, buffer = terminal()
    assert show_image_inline(picture, console, env={"TERM": "xterm-kitty"}, max_pixels=40)
    out = buffer.getvalue()
    chunks = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", out)
    assert chunks and "a=T" in chunks[0][0] and "f=100" in chunks[0][0]
    assert [c[0].endswith("m=1") for c in chunks] == [True] * (len(chunks) - 1) + [False]
    assert all(len(c[1]) <= 4096 for c in chunks)
    image = decode_png("".join(c[1] for c in chunks))
    assert image.size == (40, 20)  # scaled down to max_pixels, aspect kept


def test_kitty_large_image_is_chunked(tmp_path):
    path = tmp_path / "noise.png"
    import numpy as np

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(path)
    console, buffer = terminal()
    assert show_image_inline(path, console, env={"KITTY_WINDOW_ID": "3"})
    chunks = re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", buffer.getvalue())
    assert len(chunks) > 5
    assert decode_png("".join(c[1] for c in chunks)).size == (200, 200)


def test_iterm2_sequence(picture):
    console, buffer = terminal()
    assert show_image_inline(picture, console, env={"TERM_PROGRAM": "iTerm.app"})
    match = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]+)\x07\n", buffer.getvalue())
    assert match
    fields = dict(part.split("=", 1) for part in match.group(1).split(";"))
    assert fields["inline"] == "1" and base64.b64decode(fields["name"]) == b"pic.png"
    payload = base64.b64decode(match.group(2))
    assert int(fields["size"]) == len(payload) and payload == picture.read_bytes()


def test_nothing_written_without_support(picture):
    console, buffer = terminal()
    assert not show_image_inline(picture, console, env={"TERM": "xterm-256color"})
    assert buffer.getvalue() == ""
    plain = Console(file=io.StringIO(), force_terminal=False)
    assert not show_image_inline(picture, plain, env={"TERM": "xterm-kitty"})
    assert plain.file.getvalue() == ""


def test_unreadable_image_is_ignored(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    console, buffer = terminal()
    assert not show_image_inline(bad, console, env={"TERM": "xterm-kitty"})
    assert not show_image_inline(tmp_path / "missing.png", console, env={"TERM": "xterm-kitty"})
    assert buffer.getvalue() == ""
