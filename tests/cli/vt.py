"""A small terminal emulator for the chat tests: what a user would see, from the raw bytes.

It knows what rich and prompt_toolkit send (cursor moves, line and screen erases, deferred
wrap at the right margin, scrolling) and ignores colours, modes and title strings. The
scrollback is kept, so `text()` is the whole session as it stands on the screen at the end.
"""

from __future__ import annotations

import re

__all__ = ["Screen", "render"]

_CSI = re.compile(r"\x1b\[([0-9;?>=]*)([ -/]*)([@-~])")
_OSC = re.compile(r"\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


class Screen:
    def __init__(self, rows: int, cols: int):
        self.rows, self.cols = rows, cols
        self.lines: list[list[str]] = [[] for _ in range(rows)]
        self.top = 0  # index in `lines` of the screen's first row; above it is scrollback
        self.y = 0  # absolute line index of the cursor
        self.x = 0
        self.pending_wrap = False
        self.saved = (0, 0)

    # ---- primitives ------------------------------------------------------------------------

    def _line(self, y: int) -> list[str]:
        while len(self.lines) <= y:
            self.lines.append([])
        return self.lines[y]

    def _linefeed(self) -> None:
        if self.y == self.top + self.rows - 1:
            self.top += 1
            self._line(self.top + self.rows - 1)
        self.y += 1
        self.pending_wrap = False

    def _put(self, ch: str) -> None:
        if self.pending_wrap:
            self.x = 0
            self._linefeed()
        line = self._line(self.y)
        while len(line) <= self.x:
            line.append(" ")
        line[self.x] = ch
        if self.x == self.cols - 1:
            self.pending_wrap = True
        else:
            self.x += 1

    def _erase_line(self, mode: int) -> None:
        line = self._line(self.y)
        if mode == 0:
            del line[self.x:]
        elif mode == 1:
            for i in range(min(self.x + 1, len(line))):
                line[i] = " "
        else:
            line.clear()

    def _erase_screen(self, mode: int) -> None:
        if mode == 0:
            self._erase_line(0)
            for y in range(self.y + 1, self.top + self.rows):
                self._line(y).clear()
        elif mode == 2:
            for y in range(self.top, self.top + self.rows):
                self._line(y).clear()

    def _csi(self, params: str, final: str) -> None:
        if params.startswith(("?", ">", "=")):
            return  # private modes: cursor visibility, bracketed paste, wrap mode ...
        nums = [int(p) if p else 0 for p in params.split(";")] if params else []
        n = max(1, nums[0]) if nums else 1
        if final in "ABCDGHfKJ":
            self.pending_wrap = False
        if final == "A":
            self.y = max(self.top, self.y - n)
        elif final == "B":
            self.y = min(self.top + self.rows - 1, self.y + n)
        elif final == "C":
            self.x = min(self.cols - 1, self.x + n)
        elif final == "D":
            self.x = max(0, self.x - n)
        elif final == "G":
            self.x = min(self.cols - 1, n - 1)
        elif final in "Hf":
            row = max(1, nums[0]) if nums else 1
            col = max(1, nums[1]) if len(nums) > 1 else 1
            self.y, self.x = self.top + min(row, self.rows) - 1, min(col, self.cols) - 1
        elif final == "K":
            self._erase_line(nums[0] if nums else 0)
        elif final == "J":
            self._erase_screen(nums[0] if nums else 0)

    # ---- input -----------------------------------------------------------------------------

    def feed(self, data: str) -> None:
        data = _OSC.sub("", data)
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                match = _CSI.match(data, i)
                if match:
                    self._csi(match.group(1), match.group(3))
                    i = match.end()
                    continue
                nxt = data[i + 1:i + 2]
                if nxt == "7":
                    self.saved = (self.y - self.top, self.x)
                elif nxt == "8":
                    self.y, self.x = self.top + self.saved[0], self.saved[1]
                i += 2
                continue
            if ch == "\r":
                self.x, self.pending_wrap = 0, False
            elif ch == "\n":
                self._linefeed()
            elif ch == "\b":
                self.x, self.pending_wrap = max(0, self.x - 1), False
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
            i += 1

    def text(self) -> str:
        """Every line, scrollback included, without trailing blanks."""
        lines = ["".join(line).rstrip() for line in self.lines]
        while lines and not lines[-1]:
            lines.pop()
        return "\n".join(lines)


def render(data: str, rows: int, cols: int) -> str:
    screen = Screen(rows, cols)
    screen.feed(data)
    return screen.text()
