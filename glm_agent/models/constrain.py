"""Grammar-constrained tool calls for `LocalModel`, with llguidance.

Once the model opens a tool call, every next token is masked so that the call's name is one
of the tools and its arguments match that tool's JSON schema; text outside calls is left
alone. `CallConstraint` is the engine scheduler's per-request `logits_processor`: it decodes
what was generated, spots a call opening the way the dialect's parser reads one, and from
then on applies the mask of an llguidance matcher until the call's JSON is complete.

Openings it recognises (the parsers in `dialects/` read the same ones):
- `<tool_call>` (Hermes; also inside GLM answer text), then `{"name": ..., "arguments": ...}`;
- a line that starts with `{"name":` (Qwen2.5-Coder writes bare or fenced calls);
- GLM: a segment's first line (after `<|assistant|>` or at the turn's start) is the tool's
  name; only a known name may stand alone on that line, then the body is the tool's JSON
  arguments (a GLM-4 built-in whose body is raw text, e.g. `python` code, is left free).

`tool_choice` "required" / named forces the opening at the start of the turn, and
`response_format` json_schema makes the whole answer one JSON value, then ends the turn.

Why llguidance: one 3 MB wheel with no dependencies, it reads our `tokenizers` JSON (GGUF
vocabularies included) and tiktoken vocabularies directly, a mask over Qwen's 152k vocabulary
costs tens of microseconds on CPU, and its Lark grammars take JSON schemas and special-token
ids inline (docs/constrained.md has the measurements).
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any, Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.messages import ToolCall
from glm_agent.models.dialects._json import find_json_objects
from glm_agent.models.dialects.glm4 import builtin_of

if TYPE_CHECKING:
    import torch

    from glm_agent.engine.tokenizer import Tokenizer

__all__ = [
    "CallConstraint",
    "available",
    "cut_off_call",
    "normalize_tool_choice",
    "response_schema",
    "CUT_OFF_ERROR",
]

log = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = "<tool_call>", "</tool_call>"
ASSISTANT = "<|assistant|>"
# A call written as a bare (or fenced) JSON object: `{"name":` first on its line.
# Qwen2.5 also copies its template's `{{"name": ...` with the opening brace doubled.
_BARE_CALL = re.compile(r'(?:^|\n)[ \t]*(?:```[\w+-]*[ \t]*\n[ \t]*)?\{?(\{)\s*"name"\s*:')
_IDENT = re.compile(r"[A-Za-z_][\w.\-]*")
_NAME_IN = re.compile(r'"name"\s*:\s*"([^"]*)"')
# JSON whitespace bounded, so a small model cannot spin on newlines inside a call.
_JSON_OPTIONS = {"whitespace_pattern": r"[ \t\n\r]{0,16}", "lenient": True, "coerce_one_of": True}
CUT_OFF_ERROR = "the call was cut off by the token limit before it was complete"


def available() -> bool:
    """Whether llguidance is installed (`pip install "glm-agent[engine]"`)."""
    import importlib.util

    return importlib.util.find_spec("llguidance") is not None


def normalize_tool_choice(choice: Any, tools: Sequence[ToolSpec]) -> str | dict:
    """"auto" | "none" | "required" | {"name": tool}; OpenAI's `{"type": "function", "function":
    {"name": ...}}` and a bare tool name are accepted. ValueError names what is allowed."""
    names = [t.name for t in tools]
    if choice is None:
        return "auto"
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return choice
    name = None
    if isinstance(choice, str):
        name = choice
    elif isinstance(choice, dict):
        fn = choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else choice.get("name")
    if not isinstance(name, str) or name not in names:
        raise ValueError(
            f"tool_choice {choice!r} names no tool of this request: use 'auto', 'none', 'required' or one of "
            f"{names or '(no tools given)'}"
        )
    return {"name": name}


def response_schema(response_format: Any) -> dict | None:
    """The JSON schema a `response_format` asks for (None: free text)."""
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return schema if isinstance(schema, dict) else {"type": "object"}
    return None


def _llg_tokenizer(tok: "Tokenizer", n_vocab: int):
    """llguidance's view of our tokenizer, built once per tokenizer (a second or more for 150k tokens)."""
    cached = getattr(tok, "_llg_tokenizer", None)
    if cached is not None and cached[0] == n_vocab:
        return cached[1]
    import llguidance

    eos = tok.eos_ids[0] if tok.eos_ids else None
    if tok.kind == "tiktoken":
        from llguidance.tiktoken import lltokenizer_from_encoding

        llt = lltokenizer_from_encoding(tok._enc, n_vocab=n_vocab, eos_token=eos)
    else:
        llt = llguidance.LLTokenizer(tok._tok.to_str(), n_vocab=n_vocab, eos_token=eos)
    tok._llg_tokenizer = (n_vocab, llt)
    return llt


def _schema_of(spec: ToolSpec) -> dict:
    params = spec.parameters if isinstance(spec.parameters, dict) and spec.parameters else {}
    return _closed(params) if params else {"type": "object"}


def _closed(schema: Any) -> Any:
    """`schema` with objects that list their properties closed to others unless it says otherwise:
    a tool takes the arguments it declares, and an open object lets a small model add keys forever."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed(v) if k in ("properties", "items", "anyOf", "oneOf", "allOf", "$defs", "definitions")
           or isinstance(v, dict) and k not in ("const", "default", "enum", "examples") else v
           for k, v in schema.items()}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        out.setdefault("additionalProperties", False)
    return out


def _call_schema(tools: Sequence[ToolSpec], loose: bool = False) -> dict:
    """`{"name": <one of the tools>, "arguments": <that tool's schema>}` as one JSON schema
    (`loose`: any object as arguments, for schemas llguidance cannot compile)."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t.name}, "arguments": {"type": "object"} if loose else _schema_of(t)},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _lark_str(text: str) -> str:
    return json.dumps(text)  # a Lark string literal is a JSON string


class CallConstraint:
    """The per-request logits processor (see the module docstring).

    dialect: "hermes" | "glm4" | "glm4_0414". tool_choice: as `normalize_tool_choice` returns.
    greedy: the sampler takes the argmax, so a step whose argmax the grammar allows is left as
    it is. `mask_seconds` and `masked_steps` say what the masks cost.
    """

    def __init__(
        self,
        tokenizer: "Tokenizer",
        n_vocab: int,
        tools: Sequence[ToolSpec],
        dialect: str,
        *,
        tool_choice: str | dict = "auto",
        response_format: dict | None = None,
        stop_ids: Sequence[int] = (),
        greedy: bool = False,
    ):
        self.tok = tokenizer
        self.greedy = greedy  # the sampler takes the argmax (no temperature, no penalty)
        self.n_vocab = n_vocab
        self.tools = {t.name: t for t in tools}
        self.glm = dialect.startswith("glm4")
        self.raw_builtins = dialect == "glm4"  # glm4_0414 writes every body as JSON
        self.stop_ids = [i for i in stop_ids if 0 <= i < n_vocab]
        self.llt = _llg_tokenizer(tokenizer, n_vocab)
        self.detok = tokenizer.detokenizer()
        self.text = ""
        self.scan_from = 0  # call openings are looked for from here on
        self.fed = 0  # generated tokens already decoded into `text`
        self.matcher = None
        self.glm_body = False  # the matcher reads a GLM call's body (its segment ends with it)
        self.purpose = ""  # "call" | "header" | "opener" | "answer"
        self.finished = False  # the constrained answer is complete: only stop ids remain
        self.only: list[int] | None = None  # the next token must be one of these (a GLM call's end)
        self.calls_opened = 0
        self.mask_seconds = 0.0
        self.masked_steps = 0
        schema = response_schema(response_format)
        choice = tool_choice
        if schema is not None and choice in ("auto", "none"):
            self._start(LLMatcherGrammar.json(schema, leading_space=False), "answer")
            self.auto = False
        elif choice == "none" or not self.tools:
            self.auto = False
        else:
            self.auto = True
            if choice == "required" or isinstance(choice, dict):
                names = [choice["name"]] if isinstance(choice, dict) else list(self.tools)
                # GLM: the segment's first line must be one of the names, then the body follows.
                self._start(self._opener(names), "header" if self.glm else "opener")

    # ---- grammars -------------------------------------------------------------------------
    def _opener(self, names: list[str]) -> str:
        """The start of the turn when a call is required: the dialect's opening, then the call."""
        if self.glm:
            alternatives = " | ".join(_lark_str(n + "\n") for n in names)
            return LLMatcherGrammar.lark(f"start: {alternatives}")
        tag = self.tok.markup_tokens.get(OPEN_TAG)
        opening = f"<[{tag}]>" if tag is not None else _lark_str(OPEN_TAG)
        schema = _call_schema([self.tools[n] for n in names])
        schema = json.dumps({**schema, "x-guidance": _JSON_OPTIONS})
        return LLMatcherGrammar.lark(f'start: {opening} "\\n" call\ncall: %json {schema}')

    def _glm_header(self) -> str:
        """A GLM segment's first line: a tool's name alone on it, or anything that is not a bare name."""
        names = " | ".join(_lark_str(n + "\n") for n in self.tools)
        other = r"/(\n|[^A-Za-z_\n]|[A-Za-z_][A-Za-z0-9_.\-]*[^A-Za-z0-9_.\-\n])(.|\n)*/"
        return LLMatcherGrammar.lark(f"start: {names} | OTHER\nOTHER: {other}")

    # ---- the processor ----------------------------------------------------------------------
    def __call__(self, tokens: list[int], logits: "torch.Tensor") -> "torch.Tensor":
        try:
            return self._process(tokens, logits)
        except Exception as exc:  # noqa: BLE001 - a grammar problem must not end the turn
            log.debug("constrained decoding stopped for this turn: %r", exc)
            self.auto, self.matcher, self.finished, self.only = False, None, False, None
            return logits

    def _process(self, tokens: list[int], logits: "torch.Tensor") -> "torch.Tensor":
        t0 = time.perf_counter()
        for token in tokens[self.fed :]:
            self._advance(token)
        self.fed = len(tokens)
        if self.matcher is None and self.auto and not self.finished:
            self._look_for_call()
        if self.matcher is None and not self.finished and not self.only:
            return logits
        out = self._masked(logits)
        self.mask_seconds += time.perf_counter() - t0
        self.masked_steps += 1
        return out

    def _advance(self, token: int) -> None:
        piece = self.detok.push(token)
        self.text += piece
        self.only = None
        if self.matcher is None:
            return
        if not self.matcher.consume_token(token):
            log.debug("constrained decoding: the matcher refused a token (%s); the call goes on unconstrained",
                      _first_line(self.matcher.get_error()))
            self._release()
            return
        if self.purpose == "header" and self._header_decided():
            segment = self.text[self.scan_from :]
            self._release()
            header, newline, rest = segment.partition("\n")
            if newline and header.strip() in self.tools:
                self._open_body(header.strip(), rest)
        elif self.matcher.is_stopped():
            if self.purpose == "answer":
                self.finished = True
            elif self.purpose == "call" and self.glm and self.glm_body:
                # A GLM call's body is its JSON and nothing more: the segment ends here (the
                # turn's end, or `<|assistant|>` and another call).
                nxt = self.tok.markup_tokens.get(ASSISTANT)
                self.only = self.stop_ids + ([nxt] if nxt is not None and nxt < self.n_vocab else [])
            self._release()

    def _header_decided(self) -> bool:
        """The GLM header matcher is needed only until the first line is a name or plainly not one."""
        segment = self.text[self.scan_from :]
        return "\n" in segment or _IDENT.fullmatch(segment) is None

    def _release(self) -> None:
        self.matcher, self.purpose = None, ""
        self.scan_from = len(self.text)

    def _start(self, grammar: str, purpose: str, prefix: str = "") -> bool:
        import llguidance

        matcher = llguidance.LLMatcher(self.llt, grammar, log_level=0)
        if not matcher.is_error() and prefix:
            matcher.consume_tokens(self.tok.encode_text(prefix))
        if matcher.is_error():
            log.debug("constrained decoding: no grammar for this %s (%s); left unconstrained", purpose,
                      _first_line(matcher.get_error()))
            self.scan_from = len(self.text)
            return False
        self.matcher, self.purpose = matcher, purpose
        self.glm_body = False
        if purpose in ("call", "opener"):
            self.calls_opened += 1
        return True

    def _look_for_call(self) -> None:
        text = self.text
        start = self.scan_from
        tag = text.find(OPEN_TAG, start)
        bare = next((m for m in _BARE_CALL.finditer(text, max(start - 1, 0)) if m.start(1) >= start), None)
        spots = [s for s in ((tag, "tag"), (bare.start(1) if bare else -1, "bare")) if s[0] >= 0]
        if self.glm:
            self._glm_segments(spots)
        if not spots:
            self._skip_scanned()
            return
        at, kind = min(spots)
        if kind in ("tag", "bare"):
            prefix = text[at + len(OPEN_TAG) :] if kind == "tag" else text[at:]
            tools = list(self.tools.values())
            # A schema llguidance cannot compile still gets its call's name checked.
            if not self._start(LLMatcherGrammar.json(_call_schema(tools)), "call", prefix):
                self._start(LLMatcherGrammar.json(_call_schema(tools, loose=True)), "call", prefix)
        elif kind == "header":
            if self._start(self._glm_header(), "header", text[at:]):
                self.scan_from = at  # `_header_decided` reads the segment from here
        else:  # a known tool's name stood alone on the segment's first line: its body follows
            self._open_body(kind.removeprefix("body:"), text[text.index("\n", at) + 1 :])

    def _open_body(self, name: str, rest: str) -> None:
        """A GLM call's body after its name line: the tool's JSON arguments."""
        spec = self.tools[name]
        if self.raw_builtins and builtin_of(name, spec) is not None:
            self.scan_from = len(self.text)  # a raw body (code, a prompt): free text until the segment ends
            self.calls_opened += 1
            return
        if self._start(LLMatcherGrammar.json(_schema_of(spec)), "call", rest):
            self.glm_body = True

    def _skip_scanned(self) -> None:
        """Move `scan_from` past text that can no longer start an opening, so each step scans
        only the last few characters (a tag still arriving) or the current line while it may
        still become a bare call (blank so far, or starting with `{` or a fence)."""
        text = self.text
        keep = len(text) - max(len(OPEN_TAG), len(ASSISTANT)) + 1
        newline = text.rfind("\n")
        line = text[newline + 1 :].lstrip(" \t")
        if not line or line.startswith(("{", "`")):
            keep = min(keep, newline + 1)
        self.scan_from = max(self.scan_from, keep, 0)

    def _glm_segments(self, spots: list) -> None:
        """GLM segment starts at or after `scan_from`: the turn's start and each `<|assistant|>`."""
        text, start = self.text, self.scan_from
        starts = [0] if start == 0 else []
        i = text.find(ASSISTANT, max(start - len(ASSISTANT), 0))
        while i >= 0:
            starts.append(i + len(ASSISTANT))
            i = text.find(ASSISTANT, i + 1)
        for seg in starts:
            if seg < start and seg != 0:
                continue
            line = text[seg:].split("\n", 1)
            header = line[0].strip()
            if len(line) == 2 and header in self.tools:
                spots.append((seg, "body:" + header))
            elif len(line) == 1 and (header == "" or _IDENT.fullmatch(header)):
                spots.append((seg, "header"))

    def _masked(self, logits: "torch.Tensor") -> "torch.Tensor":
        """The logits with every token the grammar refuses at -inf. Few torch ops on purpose: each
        is a pass over the whole vocabulary, while the mask itself is built in numpy."""
        import numpy as np
        import torch

        width = logits.shape[-1]
        if self.finished or self.only:  # the answer (or a GLM call) is complete: only its end remains
            allowed = np.zeros(width, dtype=bool)
            allowed[(self.only if not self.finished else None) or self.stop_ids or self.tok.eos_ids[:1]] = True
        else:
            bits = np.unpackbits(np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
            allowed = np.zeros(width, dtype=bool)
            n = min(width, bits.shape[0])
            allowed[:n] = bits[:n]
            if not allowed.any():  # nothing fits (should not happen): let the model end the turn
                allowed[self.stop_ids or self.tok.eos_ids[:1]] = True
        if self.greedy:  # greedy decoding picks the argmax: when the grammar allows it, nothing to mask
            best = int(logits.argmax())
            if allowed[best]:
                return logits
        blocked = torch.from_numpy(~allowed)
        if logits.device.type != "cpu":
            blocked = blocked.to(logits.device, non_blocking=True)
        return logits.masked_fill(blocked, float("-inf"))

    @property
    def in_call(self) -> bool:
        return self.purpose in ("call", "opener")


class LLMatcherGrammar:
    """llguidance grammar strings."""

    @staticmethod
    def json(schema: dict, leading_space: bool = True) -> str:
        """One JSON value of `schema`; `leading_space`: a few blanks may come first (after a tag)."""
        schema = {**schema, "x-guidance": {**_JSON_OPTIONS, **schema.get("x-guidance", {})}}
        ws = "WS? " if leading_space else ""
        return LLMatcherGrammar.lark(f"start: {ws}call\nWS: /[ \\t\\n]{{1,4}}/\ncall: %json {json.dumps(schema)}")

    @staticmethod
    def lark(source: str) -> str:
        import llguidance

        return llguidance.LLMatcher.grammar_from_lark(source)


def cut_off_call(text: str, dialect: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """The tool call a turn cut off by the token limit left open, if any (as a call carrying
    `CUT_OFF_ERROR`, for the agent to tell the model), else None."""
    names = {t.name for t in tools}
    tag = text.rfind(OPEN_TAG)
    if tag >= 0 and CLOSE_TAG not in text[tag:]:
        return _unfinished(text[tag + len(OPEN_TAG) :])
    bares = list(_BARE_CALL.finditer(text))
    if bares:
        body = text[bares[-1].start(1) :]
        if not find_json_objects(body):
            return _unfinished(body)
    if dialect.startswith("glm4"):
        segment = text.rsplit(ASSISTANT, 1)[-1]
        header, newline, body = segment.partition("\n")
        header = header.strip()
        if newline and (header in names or (_IDENT.fullmatch(header) and body.lstrip().startswith("{"))):
            return ToolCall(name=header, raw_arguments=body, arguments_error=CUT_OFF_ERROR)
    return None


def _unfinished(body: str) -> ToolCall | None:
    if find_json_objects(body):
        return None  # a complete call that only lacks its closing tag: the parser reads it
    name = _NAME_IN.search(body)
    return ToolCall(name=name.group(1) if name else "", raw_arguments=body.strip(), arguments_error=CUT_OFF_ERROR)
