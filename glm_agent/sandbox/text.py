"""Text helpers shared by the python and shell tools: ANSI stripping, bounded capture,
and head+tail truncation for what the model sees."""

from __future__ import annotations

import re

__all__ = ["strip_ansi", "collapse_cr", "truncate_middle", "BoundedText"]

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


def strip_ansi(text: str) -> str:
    return _ANSI.sub("", text)


def collapse_cr(text: str) -> str:
    """Keep what a terminal would show for progress bars: the text after the last \\r."""
    if "\r" not in text:
        return text
    text = text.replace("\r\n", "\n")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def truncate_middle(text: str, limit: int, what: str = "characters") -> tuple[str, int]:
    """Keep the head and the tail of `text` within about `limit` characters.

    Returns (text, number of characters cut). Cuts fall on line boundaries when one is near.
    """
    if limit <= 0 or len(text) <= limit:
        return text, 0
    head_len = limit * 2 // 3
    tail_len = limit - head_len
    head = text[:head_len]
    tail = text[len(text) - tail_len:]
    nl = head.rfind("\n")
    if nl > head_len * 0.8:
        head = head[: nl + 1]
    nl = tail.find("\n")
    if 0 <= nl < tail_len * 0.2:
        tail = tail[nl + 1:]
    cut = len(text) - len(head) - len(tail)
    note = f"\n[... {cut:,} {what} cut from the middle of the output ...]\n"
    return head + note + tail, cut


class BoundedText:
    """Accumulates text, keeping at most `head` leading and `tail` trailing characters.

    Memory stays bounded however much is written (100 MB of prints); `dropped` counts
    what was discarded between the two.
    """

    def __init__(self, head: int, tail: int):
        self.head_limit = head
        self.tail_limit = tail
        self._head: list[str] = []
        self._head_len = 0
        self._tail = ""
        self.dropped = 0
        self.total = 0

    def write(self, text: str) -> None:
        if not text:
            return
        self.total += len(text)
        room = self.head_limit - self._head_len
        if room > 0:
            part = text[:room]
            self._head.append(part)
            self._head_len += len(part)
            text = text[room:]
            if not text:
                return
        joined = self._tail + text
        if len(joined) > self.tail_limit:
            self.dropped += len(joined) - self.tail_limit
            joined = joined[len(joined) - self.tail_limit:]
        self._tail = joined

    def getvalue(self) -> str:
        head = "".join(self._head)
        if self.dropped:
            return f"{head}\n[... {self.dropped:,} characters dropped ...]\n{self._tail}"
        return head + self._tail
