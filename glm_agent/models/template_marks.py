"""Follow message content through a Jinja chat template, so the prompt knows where it is.

A template transforms content before printing it (trim, `split('</think>')`, `tojson`,
concatenation with markup), so content cannot simply be wrapped in marks before rendering:
`content.strip()` would keep the marks' whitespace, `content == ''` and
`content.startswith('<tool_response>')` would change their answers. Instead content enters the
template as `Marked` strings: a `str` subclass whose value is the exact text (every test a
template makes answers as before) and which remembers which characters are content.

- concatenation (`+`, `~`) keeps the parts apart: `'<|im_start|>' + role + content` stays
  markup, markup, content;
- `strip`, `lstrip`, `rstrip`, slicing and iteration cut the parts; any other operation on a
  value that holds content (methods, filters, `%`, `join`, `format`) makes its whole result
  content. Too much content is safe: it only loses markup tokens;
- printing (`{{ ... }}`) writes content between the marks of `glm_agent.engine.prompt`; text
  captured by `{% set %}` blocks or macros keeps those marks and is read back as `Marked`
  when the template works on it again.

`MarkingEnvironment` installs these hooks on jinja2's immutable sandbox: calls, attribute and
item lookups, the `+ * %` operators, `~`, every filter, and the output of `{{ }}`.

`TokenMarker` is the fallback when that tracking fails: it marks only the token strings (and
token halves at the ends) inside content, before rendering with the plain sandbox.
"""

from __future__ import annotations

import collections.abc
import functools
import re
from typing import Any, Iterable

from jinja2.compiler import CodeGenerator
from jinja2.runtime import Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment

from glm_agent.engine.prompt import CLOSE, OPEN, Prompt, UnbalancedMarks, sanitize, strip_marks

__all__ = ["Marked", "MarkingEnvironment", "TokenMarker", "mark_content", "sanitized"]

Parts = tuple[tuple[str, bool], ...]
# Role values templates turn into tokens (`<|{{ role }}|>`): left out of the content marks.
# Ours are fixed strings, never user text.
_ROLES = frozenset({"system", "user", "assistant", "tool", "observation", "function", "ipython", "developer"})


class Marked(str):
    """A string made of markup and content parts; its value is the plain concatenation."""

    parts: Parts

    def __new__(cls, value: str = "", parts: Iterable[tuple[str, bool]] | None = None) -> "Marked":
        # Marked(text) (how str methods and jinja rebuild a subclass) is all content.
        merged: list[tuple[str, bool]] = []
        for text, is_content in parts if parts is not None else ((str.__str__(value), True),):
            if not text:
                continue
            if merged and merged[-1][1] == is_content:
                merged[-1] = (merged[-1][0] + text, is_content)
            else:
                merged.append((text, is_content))
        obj = super().__new__(cls, "".join(t for t, _ in merged))
        obj.parts = tuple(merged)
        return obj

    @classmethod
    def content(cls, text: str) -> "Marked":
        return cls(parts=((text, True),))

    @classmethod
    def from_marked_text(cls, text: str) -> "Marked":
        """A string holding marks (printed by a macro or a `{% set %}` block) read back."""
        try:
            prompt = Prompt.parse(text)
        except UnbalancedMarks:
            return cls.content(strip_marks(text))
        parts, pos = [], 0
        for a, b in prompt.content:
            parts += [(prompt.text[pos:a], False), (prompt.text[a:b], True)]
            pos = b
        parts.append((prompt.text[pos:], False))
        return cls(parts=parts)

    @property
    def has_content(self) -> bool:
        return any(is_content for _, is_content in self.parts)

    def marked_text(self) -> str:
        return "".join(OPEN + t + CLOSE if c else t for t, c in self.parts)

    def _slice(self, start: int, end: int) -> "Marked":
        parts, pos = [], 0
        for text, is_content in self.parts:
            a, b = max(start - pos, 0), min(end - pos, len(text))
            if a < b:
                parts.append((text[a:b], is_content))
            pos += len(text)
        return Marked(parts=parts)

    # ---- operations that keep the parts ---------------------------------------------------------
    def __str__(self) -> "Marked":
        return self

    def __add__(self, other: Any) -> Any:
        if not isinstance(other, str):
            return NotImplemented
        return Marked(parts=self.parts + _parts(other))

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, str):
            return NotImplemented
        return Marked(parts=_parts(other) + self.parts)

    def strip(self, chars: str | None = None) -> "Marked":
        plain = str.__str__(self)
        return self._slice(len(plain) - len(plain.lstrip(chars)), len(plain.rstrip(chars)))

    def lstrip(self, chars: str | None = None) -> "Marked":
        plain = str.__str__(self)
        return self._slice(len(plain) - len(plain.lstrip(chars)), len(plain))

    def rstrip(self, chars: str | None = None) -> "Marked":
        return self._slice(0, len(str.__str__(self).rstrip(chars)))

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice) and key.step in (None, 1):
            start, stop, _ = key.indices(len(self))
            return self._slice(start, max(start, stop))
        if isinstance(key, int):
            start = key + len(self) if key < 0 else key
            if not 0 <= start < len(self):
                raise IndexError("string index out of range")
            return self._slice(start, start + 1)
        return _derive(str.__getitem__(self, key))

    def __iter__(self):
        return (self._slice(i, i + 1) for i in range(len(self)))


def _whole(name: str):
    method = getattr(str, name)

    @functools.wraps(method)
    def derived(self, *args, **kwargs):
        args, kwargs = _unmark_args(args, kwargs)
        result = method(str.__str__(self), *args, **kwargs)
        return _derive(result) if self.has_content or _args_hold_content(args, kwargs) else result

    return derived


# Every other str operation that returns text: its result is content when an input was.
for _name in (
    "capitalize", "casefold", "center", "expandtabs", "format", "format_map", "join", "ljust",
    "lower", "partition", "removeprefix", "removesuffix", "replace", "rjust", "rpartition",
    "rsplit", "split", "splitlines", "swapcase", "title", "translate", "upper", "zfill",
    "__mod__", "__rmod__", "__mul__", "__rmul__",
):
    setattr(Marked, _name, _whole(_name))


def _parts(value: str) -> Parts:
    if isinstance(value, Marked):
        return value.parts
    if OPEN in value or CLOSE in value:
        return Marked.from_marked_text(value).parts
    return ((value, False),)


def _unmark(value: Any) -> Any:
    """A plain str that carries marks (printed earlier) becomes the Marked it stands for."""
    if isinstance(value, str) and not isinstance(value, Marked) and (OPEN in value or CLOSE in value):
        return Marked.from_marked_text(value)
    return value


def _unmark_arg(value: Any) -> Any:
    # A generator (jinja's `map`, `select`...) is read into a list so its items can be
    # inspected; filters and methods take lists alike. jinja's own iterators (`loop`) stay.
    if isinstance(value, collections.abc.Iterator) and type(value).__module__ == "builtins":
        return list(value)
    return _unmark(value)


# Keyword arguments jinja adds to calls inside loops and blocks (the loop's variables).
_JINJA_KWARGS = ("_loop_vars", "_block_vars", "caller")


def _unmark_args(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    return (
        tuple(_unmark_arg(a) for a in args),
        {k: v if k in _JINJA_KWARGS else _unmark_arg(v) for k, v in kwargs.items()},
    )


def _args_hold_content(args: tuple, kwargs: dict) -> bool:
    return _holds_content(args) or any(
        _holds_content(v) for k, v in kwargs.items() if k not in _JINJA_KWARGS
    )


def _holds_content(value: Any, depth: int = 0) -> bool:
    if isinstance(value, Marked):
        return value.has_content
    if isinstance(value, str):
        return OPEN in value or CLOSE in value
    if depth > 32:
        return False
    if isinstance(value, dict):
        return any(_holds_content(k, depth + 1) or _holds_content(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_holds_content(v, depth + 1) for v in value)
    return False


def _derive(value: Any) -> Any:
    """A result computed from content: text in it is content (marked parts are kept)."""
    if isinstance(value, Marked):
        return value  # made by Marked's own operations, which already say what is content
    if isinstance(value, str):
        if OPEN in value or CLOSE in value:
            return Marked.from_marked_text(value)
        return Marked.content(value)
    if isinstance(value, list):
        return [_derive(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_derive(v) for v in value)
    if isinstance(value, collections.abc.Iterator):
        return (_derive(v) for v in value)
    return value


def _plain_role(key: Any, value: Any) -> bool:
    return key == "role" and value in _ROLES


def mark_content(value: Any) -> Any:
    """Every string in a message/tool structure (dict keys too, known roles excepted) as
    sanitized content."""
    if isinstance(value, str):
        return Marked.content(sanitize(value))
    if isinstance(value, dict):
        return {mark_content(k): v if _plain_role(k, v) else mark_content(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(mark_content(v) for v in value)
    return value


def _finalize(value: Any) -> Any:
    return value.marked_text() if isinstance(value, Marked) else value


def _concat(values: tuple) -> str:
    """`a ~ b`: jinja's str_join, keeping marked parts apart."""
    texts = [_unmark(v if isinstance(v, str) else str(v)) for v in values]
    if any(isinstance(t, Marked) for t in texts):
        return Marked(parts=[p for t in texts for p in _parts(t)])
    return "".join(texts)


class _CodeGenerator(CodeGenerator):
    def visit_Concat(self, node, frame) -> None:  # noqa: N802 (jinja's visitor name)
        # Constant-only concatenations are folded by the optimizer before they get here.
        self.write("environment.concat_marked((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _marking_filter(func):
    @functools.wraps(func)  # keeps jinja's pass_context / pass_eval_context flags
    def wrapper(*args, **kwargs):
        args, kwargs = _unmark_args(args, kwargs)
        result = func(*args, **kwargs)
        return _derive(result) if _args_hold_content(args, kwargs) else result

    return wrapper


class MarkingEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the hooks that keep content marked (see the module docstring)."""

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "*", "%"})

    def __init__(self, **options: Any):
        super().__init__(finalize=_finalize, **options)
        self.concat_marked = _concat

    def wrap_filters(self) -> None:
        """Call after all filters are registered."""
        self.filters = {name: _marking_filter(f) for name, f in self.filters.items()}

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        args, kwargs = _unmark_args(args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        if isinstance(__obj, Macro):
            return result  # a macro's output went through `{{ }}`: its content is marked
        return _derive(result) if _args_hold_content(args, kwargs) else result

    def call_binop(self, context, operator, left, right):
        left, right = _unmark(left), _unmark(right)
        result = super().call_binop(context, operator, left, right)
        if isinstance(result, str) and not isinstance(result, Marked) and _holds_content((left, right)):
            return _derive(result)
        return result

    def getattr(self, obj, attribute):
        return super().getattr(_unmark(obj), attribute)

    def getitem(self, obj, argument):
        return super().getitem(_unmark(obj), _unmark(argument))


def sanitized(value: Any) -> Any:
    """Every string of a structure with the mark characters replaced (`prompt.sanitize`)."""
    if isinstance(value, str):
        return sanitize(value)
    if isinstance(value, dict):
        return {sanitized(k): sanitized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(sanitized(v) for v in value)
    return value


class TokenMarker:
    """The fallback: in every string of a structure, wrap each token string, and each token
    fragment at the string's ends (it could join the text next to it into a token), in marks."""

    def __init__(self, tokens: Iterable[str]):
        tokens = sorted(set(tokens), key=len, reverse=True)
        self._find = re.compile("|".join(re.escape(t) for t in tokens))
        self._prefixes = {t[:i] for t in tokens for i in range(1, len(t))}
        self._suffixes = {t[i:] for t in tokens for i in range(1, len(t))}
        self.longest = len(tokens[0])

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._wrap(value)
        if isinstance(value, dict):
            return {self._wrap(k): v if _plain_role(k, v) else self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self(v) for v in value)
        return value

    def _wrap(self, text: str) -> str:
        text = self._find.sub(lambda m: OPEN + m.group(0) + CLOSE, text)
        for n in range(min(self.longest - 1, len(text)), 0, -1):
            if text[:n] in self._suffixes:
                text = OPEN + text[:n] + CLOSE + text[n:]
                break
        for n in range(min(self.longest - 1, len(text)), 0, -1):
            if text[-n:] in self._prefixes:
                text = text[:-n] + OPEN + text[-n:] + CLOSE
                break
        return text
