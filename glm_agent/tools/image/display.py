"""Show a generated image inside the terminal, where the terminal can draw images.

Two widespread protocols, both plain escape sequences (no extra dependency):
- kitty graphics protocol (kitty, Ghostty; WezTerm and Konsole understand it too): PNG bytes
  sent base64-encoded in <=4096-byte chunks, `a=T` transmit-and-display, `f=100` PNG.
- iTerm2 inline images (iTerm2, WezTerm, mintty, VS Code's terminal with images enabled):
  one OSC 1337 `File=inline=1` sequence.
Detection is by environment (TERM, TERM_PROGRAM, KITTY_WINDOW_ID, LC_TERMINAL); inside tmux
or screen, or when output is not a terminal, nothing is drawn: the CLI prints the path anyway.
Sixel is not attempted: it needs palette quantisation and probing the terminal's answer.
"""

from __future__ import annotations

import base64
import io
import os
import sys
from pathlib import Path
from typing import Any, Literal, Mapping

from glm_agent.sandbox.workspace import read_file

__all__ = ["detect_image_protocol", "show_image_inline", "kitty_sequence", "iterm2_sequence"]

Protocol = Literal["kitty", "iterm2"]

_KITTY_CHUNK = 4096
MAX_IMAGE_BYTES = 32 * 1024 * 1024  # larger files are not previewed


def detect_image_protocol(env: Mapping[str, str] | None = None) -> Protocol | None:
    """Which inline image protocol the terminal described by `env` speaks, if any."""
    env = os.environ if env is None else env
    term = env.get("TERM", "").lower()
    program = env.get("TERM_PROGRAM", "").lower()
    if env.get("TMUX") or term.startswith(("screen", "tmux")) or program == "tmux":
        return None  # multiplexers swallow these sequences unless passthrough is configured
    if env.get("KITTY_WINDOW_ID") or term == "xterm-kitty" or program == "ghostty" or term == "xterm-ghostty":
        return "kitty"
    if program in ("iterm.app", "wezterm", "mintty") or env.get("LC_TERMINAL", "").lower() == "iterm2":
        return "iterm2"
    return None


def _png_bytes(path: Path, max_pixels: int, workspace: str | os.PathLike[str] | None = None) -> bytes:
    """The image as PNG, scaled down so that its longer side is at most `max_pixels`.

    The file is read the safe way (no link followed, regular files only, size-capped):
    images live in workspaces that sandboxed code controls.
    """
    from PIL import Image

    raw = read_file(path, workspace=workspace, max_bytes=MAX_IMAGE_BYTES)
    try:
        with Image.open(io.BytesIO(raw)) as image:
            if max(image.size) <= max_pixels and image.format == "PNG":
                return raw
            image = image.copy()
    except Image.DecompressionBombError as exc:  # a huge canvas in a small file
        raise ValueError(str(exc)) from None
    image.thumbnail((max_pixels, max_pixels))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def kitty_sequence(png: bytes, columns: int | None = None) -> str:
    data = base64.standard_b64encode(png).decode("ascii")
    chunks = [data[i : i + _KITTY_CHUNK] for i in range(0, len(data), _KITTY_CHUNK)] or [""]
    out = []
    for index, chunk in enumerate(chunks):
        more = 1 if index < len(chunks) - 1 else 0
        if index == 0:
            keys = "a=T,f=100,q=2" + (f",c={columns}" if columns else "")
            out.append(f"\x1b_G{keys},m={more};{chunk}\x1b\\")
        else:
            out.append(f"\x1b_Gm={more};{chunk}\x1b\\")
    return "".join(out)


def iterm2_sequence(png: bytes, name: str = "image.png", columns: int | None = None) -> str:
    encoded_name = base64.b64encode(name.encode()).decode("ascii")
    width = str(columns) if columns else "auto"
    data = base64.b64encode(png).decode("ascii")
    return (
        f"\x1b]1337;File=name={encoded_name};size={len(png)};inline=1;"
        f"width={width};preserveAspectRatio=1:{data}\x07"
    )


def show_image_inline(
    path: str | os.PathLike[str],
    console: Any = None,
    *,
    env: Mapping[str, str] | None = None,
    max_pixels: int = 768,
    columns: int | None = None,
    workspace: str | os.PathLike[str] | None = None,
) -> bool:
    """Draw the image at `path` in the terminal if it supports images; return whether it did.

    `console` is a rich Console (its file is used and it must be a terminal) or None for stdout.
    `workspace`: the folder the image came from; no link below it is followed (without it,
    the image's own folder is trusted and only the file itself is checked).
    Never raises for an unreadable image or a closed stream: showing a preview is optional.
    """
    protocol = detect_image_protocol(env)
    if protocol is None:
        return False
    stream = getattr(console, "file", None) or sys.stdout
    is_terminal = getattr(console, "is_terminal", None)
    if is_terminal is None:
        is_terminal = bool(getattr(stream, "isatty", lambda: False)())
    if not is_terminal:
        return False
    path = Path(path)
    try:
        png = _png_bytes(path, max_pixels, workspace)
        if protocol == "kitty":
            sequence = kitty_sequence(png, columns)
        else:
            sequence = iterm2_sequence(png, path.name, columns)
        stream.write(sequence + "\n")
        stream.flush()
    except (OSError, ValueError):
        return False
    return True
