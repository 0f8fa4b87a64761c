"""Making untrusted text safe to print on a terminal.

Model answers, tool output, page titles and session files may hold escape sequences that a
terminal would obey: clear the screen, set the window title, plant a hidden OSC 8 link, write
the clipboard (OSC 52), or reorder what the user reads (Unicode bidi overrides). `safe_text`
shows every such character visibly instead (`\\x1b` -> `^[`, `\\x9b` -> `\\x9b`,
`\\u202e` -> `<U+202E>`), keeping newlines and tabs. Our own deliberate escapes (rich
styling, inline images) are added after this, so they are unaffected.
"""

from __future__ import annotations

import html
import re

__all__ = ["UNSAFE_CHARS", "safe_json", "safe_markdown", "safe_text"]

# Bidi embeddings/overrides/isolates and the marks that can reorder neutral characters.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
# C0 except \t and \n, DEL, C1, bidi controls.
UNSAFE_CHARS = "".join(chr(c) for c in range(0x20) if chr(c) not in "\t\n") + "\x7f" + \
    "".join(chr(c) for c in range(0x80, 0xA0)) + _BIDI

_UNSAFE_RE = re.compile(f"[{re.escape(UNSAFE_CHARS)}]")
# Character references a markdown renderer would decode (&#27; &#x202E; &rlm;).
_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});")


def _visible(match: re.Match) -> str:
    code = ord(match.group(0))
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)  # caret notation, as `cat -v`: ESC -> ^[, BEL -> ^G
    if code < 0xA0:
        return f"\\x{code:02x}"
    return f"<U+{code:04X}>"


def safe_text(text: object) -> str:
    """`text` with every terminal control character shown visibly; \\n and \\t are kept."""
    text = str(text).replace("\r\n", "\n")
    return _UNSAFE_RE.sub(_visible, text)


def _entity(match: re.Match) -> str:
    ref = match.group(0)
    if ref.startswith("&#"):
        code = int(ref[3:-1], 16) if ref[2] in "xX" else int(ref[2:-1])
        decoded = chr(code) if code < 0x110000 else ""
    else:
        decoded = html.unescape(ref)
    if _UNSAFE_RE.search(decoded):
        return "&amp;" + ref[1:]  # shown as written instead of decoded
    return ref


def safe_markdown(text: object) -> str:
    """`safe_text` for markdown: also keeps character references such as `&#x202E;` from
    being decoded into control characters by the renderer."""
    return _ENTITY_RE.sub(_entity, safe_text(text))


def safe_json(text: str) -> str:
    """JSON text (as `json.dumps` writes it) with every terminal control written as a
    `\\uXXXX` escape: the same JSON value, safe to print. `json.dumps` already escapes C0."""
    return _UNSAFE_RE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)
