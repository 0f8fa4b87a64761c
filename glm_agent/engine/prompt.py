"""A rendered prompt that knows which of its characters are message content.

Chat markup (role headers, turn separators, `<tool_call>` tags, `[gMASK]`) must become the
tokenizer's special or added token ids. Everything that came from a message, a tool result or
a tool spec must be encoded as ordinary text: otherwise a web page that says
`<|im_start|>system` opens a real system turn. Renderers wrap content in two Unicode
noncharacters (U+FDD0 ... U+FDD1, reserved for a program's internal use) and `Prompt.parse`
turns that marked text into the plain prompt text plus the character spans of the content.
`Tokenizer.encode_prompt` then lets special tokens match only outside those spans.

Content is sanitized first (`sanitize`): a noncharacter in a message becomes U+FFFD, so no
message can close its own span early.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass

__all__ = ["Prompt", "UnbalancedMarks", "OPEN", "CLOSE", "mark", "sanitize", "strip_marks"]

OPEN, CLOSE = "\ufdd0", "\ufdd1"
_MARKS = re.compile(f"([{OPEN}{CLOSE}])")


class UnbalancedMarks(ValueError):
    """Content marks that do not pair up (a template cut through a marked span)."""


def sanitize(text: str) -> str:
    """`text` with the two mark characters replaced by U+FFFD."""
    if OPEN in text or CLOSE in text:
        return text.replace(OPEN, "\ufffd").replace(CLOSE, "\ufffd")
    return text


def mark(text: str) -> str:
    """`text` as content: sanitized and wrapped in marks (empty text stays empty)."""
    return f"{OPEN}{sanitize(text)}{CLOSE}" if text else ""


def strip_marks(text: str) -> str:
    return text.replace(OPEN, "").replace(CLOSE, "") if OPEN in text or CLOSE in text else text


@dataclass(frozen=True)
class Prompt:
    """Prompt text plus the sorted, disjoint (start, end) character spans that are content."""

    text: str
    content: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, marked: str, strict: bool = True, reach: int = 0) -> "Prompt":
        """Split marked text into text + content spans.

        strict: unpaired or nested marks raise `UnbalancedMarks`. Otherwise they are read
        safely: an unpaired CLOSE makes the `reach` characters before it content, an unpaired
        OPEN the `reach` characters after it (callers that wrap short strings, at most `reach`
        long, use this when a template may have cut through a wrapped span).
        """
        text: list[str] = []
        spans: list[tuple[int, int]] = []
        n = depth = start = 0
        for piece in _MARKS.split(marked):
            if piece == OPEN:
                if depth and strict:
                    raise UnbalancedMarks("nested content marks")
                if not depth:
                    start = n
                depth += 1
            elif piece == CLOSE:
                if not depth:
                    if strict:
                        raise UnbalancedMarks("a content mark closes with none open")
                    spans.append((max(0, n - reach), n))
                else:
                    depth -= 1
                    if not depth:
                        spans.append((start, n))
            elif piece:
                text.append(piece)
                n += len(piece)
        if depth:
            if strict:
                raise UnbalancedMarks("a content mark is never closed")
            spans.append((start, min(n, start + reach)))
        return cls("".join(text), _merge(spans))

    def overlaps(self, start: int, end: int) -> bool:
        """Whether characters [start, end) touch any content span."""
        i = bisect_right(self.content, (start, float("inf"))) - 1
        if i >= 0 and self.content[i][1] > start:
            return True
        return i + 1 < len(self.content) and self.content[i + 1][0] < end

    def content_texts(self) -> list[str]:
        return [self.text[a:b] for a, b in self.content]


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)
