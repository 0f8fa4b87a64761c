"""One tokenizer interface over three sources, plus streaming detokenization.

- GLM-4's tiktoken `tokenizer.model` (base64 token + rank per line) with its special tokens,
- a Hugging Face `tokenizer.json` (the `tokenizers` library),
- the vocabulary + merges inside a GGUF file, rebuilt as a `tokenizers` byte-level BPE with the
  pre-tokenizer llama.cpp uses for that `tokenizer.ggml.pre`.

`encode` never adds BOS/EOS on its own: chat templates and dialects write those tokens as text,
and `allow_special=True` turns their text into the special ids. A rendered chat is encoded with
`encode_prompt`, which lets special and added tokens match only in the template's markup:
message content goes through `encode_text`, which never yields a special or added token id.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from glm_agent.engine.errors import CheckpointError

if TYPE_CHECKING:
    from glm_agent.engine.loaders.gguf import GGUFCheckpoint
    from glm_agent.engine.prompt import Prompt

__all__ = [
    "Tokenizer",
    "IncrementalDetokenizer",
    "GLM4_SPECIAL_TOKENS",
    "load_tokenizer",
]

# tokenization_chatglm.py (ChatGLM4Tokenizer): ids start right after the mergeable ranks.
GLM4_SPECIAL_TOKENS = [
    "<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
    "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>",
]
_GLM4_EOS = ["<|endoftext|>", "<|user|>", "<|observation|>"]
_GLM4_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# llama.cpp's pre-tokenizer regexes, by GGUF `tokenizer.ggml.pre` (llama-vocab.cpp).
_QWEN2_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PATTERN = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# GGUF pre name -> (split regex or None, individual digits first, NFC normalize, ignore_merges)
_GGUF_PRE = {
    "qwen2": (_QWEN2_PATTERN, False, False, False),
    "deepseek-r1-qwen": (_QWEN2_PATTERN, False, False, False),
    "llama-bpe": (_LLAMA3_PATTERN, False, False, True),
    "llama3": (_LLAMA3_PATTERN, False, False, True),
    "chatglm-bpe": (_LLAMA3_PATTERN, False, False, False),
    "glm4": (_LLAMA3_PATTERN, False, False, False),
    "smollm": (None, True, False, False),
    "gpt2": (None, False, False, False),
    "default": (None, False, False, False),
}
# Control tokens that end an assistant turn in the chat formats we know.
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<|user|>",
               "<|observation|>", "<end_of_turn>")
# GGUF token_type values (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
_CONTROL, _USER_DEFINED = 3, 4


class Tokenizer:
    """Text <-> ids. Built with `from_gguf`, `from_tokenizer_json`, `from_tiktoken`
    or `load_tokenizer(folder)`."""

    kind: str  # "gguf" | "hf" | "tiktoken"
    vocab_size: int
    eos_ids: list[int]
    bos_id: int | None
    special_tokens: dict[str, int]
    # Every token only chat markup may produce: the special tokens plus added tokens such as
    # Qwen's `<tool_call>` (whitespace-only added tokens are ordinary text and not listed).
    markup_tokens: dict[str, int]

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        raise NotImplementedError

    def encode_text(self, text: str) -> list[int]:
        """`text` as ordinary text: no id of `markup_tokens` comes out, whatever it contains,
        and the ids decode back to `text`."""
        ids, offsets = self._encode_plain(text)
        bad = self._markup_ids.intersection(ids)
        if not bad:
            return ids
        # The vocabulary's merges spelled a markup token: encode the text on either side of
        # a cut inside that token, so the merge cannot happen.
        for tid, (start, end) in zip(ids, offsets):
            if tid in bad and end - start > 1:
                cut = start + (end - start) // 2
                return self.encode_text(text[:cut]) + self.encode_text(text[cut:])
        return ids  # a one-character markup token is that character: nothing to split

    def encode_prompt(self, prompt: "Prompt | str") -> list[int]:
        """A rendered chat: markup tokens count only outside the prompt's content spans.

        The whole text is encoded as `encode(allow_special=True)` does; each stretch between
        two genuine markup tokens that holds a token overlapping content is re-encoded with
        `encode_text`. So a prompt whose content has no token text gets the very same ids as
        before, and content never yields a markup id.
        """
        if isinstance(prompt, str) or not prompt.content:
            return self.encode(str(prompt), allow_special=True)
        text = prompt.text
        ids, offsets = self._encode_offsets(text)
        markup = self._markup_ids
        out: list[int] = []
        run: list[int] = []
        run_start, forged = 0, False
        for tid, (start, end) in zip(ids, offsets):
            if tid in markup:
                if not prompt.overlaps(start, end):
                    out += self.encode_text(text[run_start:start]) if forged else run
                    out.append(tid)
                    run, run_start, forged = [], end, False
                    continue
                forged = True
            run.append(tid)
        out += self.encode_text(text[run_start:]) if forged else run
        return out

    @property
    def _markup_ids(self) -> frozenset[int]:
        return frozenset(self.markup_tokens.values())

    def _encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """encode(text, allow_special=True) and each token's (start, end) character span."""
        raise NotImplementedError

    def _encode_plain(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and spans of `text` with no markup token matched as a whole."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        raise NotImplementedError

    def id_to_token(self, token_id: int) -> str | None:
        raise NotImplementedError

    @property
    def bos_token(self) -> str | None:
        return None if self.bos_id is None else self.id_to_token(self.bos_id)

    @property
    def eos_token(self) -> str | None:
        return self.id_to_token(self.eos_ids[0]) if self.eos_ids else None

    def detokenizer(self, skip_special: bool = False) -> "IncrementalDetokenizer":
        return IncrementalDetokenizer(self, skip_special=skip_special)

    def __repr__(self) -> str:
        return f"<Tokenizer {self.kind} vocab={self.vocab_size} eos={self.eos_ids}>"

    # ---- constructors ---------------------------------------------------------------------
    @staticmethod
    def from_gguf(ckpt: "GGUFCheckpoint | str | Path") -> "Tokenizer":
        from glm_agent.engine.loaders.gguf import GGUFCheckpoint

        if not isinstance(ckpt, GGUFCheckpoint):
            ckpt = GGUFCheckpoint(ckpt)
        return _gguf_tokenizer(ckpt)

    @staticmethod
    def from_tokenizer_json(path: str | Path, eos_tokens: Iterable[str | int] = ()) -> "Tokenizer":
        from tokenizers import Tokenizer as HFTok

        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"tokenizer file not found: {path}")
        try:
            tok = HFTok.from_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"cannot read {path} as a tokenizers JSON file: {exc}") from exc
        return _HFTokenizer(tok, "hf", eos=list(eos_tokens))

    @staticmethod
    def from_tiktoken(
        path: str | Path,
        special_tokens: Sequence[str] | dict[str, int] = tuple(GLM4_SPECIAL_TOKENS),
        pattern: str = _GLM4_PATTERN,
        eos_tokens: Iterable[str | int] = tuple(_GLM4_EOS),
    ) -> "Tokenizer":
        return _TiktokenTokenizer(Path(path), special_tokens, pattern, list(eos_tokens))


class _HFTokenizer(Tokenizer):
    """Backed by a `tokenizers.Tokenizer` (tokenizer.json or rebuilt from GGUF)."""

    def __init__(self, tok: Any, kind: str, eos: list[str | int], bos: str | int | None = None):
        self._tok = tok
        self.kind = kind
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        added = tok.get_added_tokens_decoder()
        self.special_tokens = {t.content: i for i, t in added.items() if t.special}
        self.markup_tokens = {t.content: i for i, t in added.items() if t.content.strip()}
        self.eos_ids = _resolve_ids(self, eos) or _guess_eos(self)
        bos_ids = _resolve_ids(self, [bos] if bos is not None else [])
        self.bos_id = bos_ids[0] if bos_ids else None
        # Added tokens `encode_special_tokens` does not cover (Qwen's `<tool_call>`).
        self._not_special = [t for t in self.markup_tokens if t not in self.special_tokens]
        self._plain: Any = None

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        # encode_special_tokens=True makes special-token text encode as plain text.
        self._tok.encode_special_tokens = not allow_special
        return self._tok.encode(text, add_special_tokens=False).ids

    def _encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        self._tok.encode_special_tokens = False
        enc = self._tok.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def _encode_plain(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        tok = self._tok
        if any(t in text for t in self._not_special):
            tok = self._plain_tokenizer()
        tok.encode_special_tokens = True
        enc = tok.encode(text, add_special_tokens=False)
        return enc.ids, enc.offsets

    def _plain_tokenizer(self) -> Any:
        """The same tokenizer without the markup tokens as added tokens.

        `encode_special_tokens` only covers tokens flagged special; added tokens that are not
        (Qwen's `<tool_call>`, GGUF USER_DEFINED tokens) would still match, so they are taken
        out of a copy (built once, on first need: about a second for a 150k vocabulary). Text
        without markup encodes exactly as with the original. Should the copy fail to build,
        the original serves, and `encode_text` cuts inside what it matches.
        """
        if self._plain is None:
            from tokenizers import Tokenizer as HFTok

            try:
                data = json.loads(self._tok.to_str())
                data["added_tokens"] = [
                    t for t in data.get("added_tokens", []) if t.get("content") not in self.markup_tokens
                ]
                self._plain = HFTok.from_str(json.dumps(data))
            except Exception:  # a component the JSON form cannot carry
                self._plain = self._tok
        return self._plain

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._tok.id_to_token(token_id)


class _TiktokenTokenizer(Tokenizer):
    kind = "tiktoken"

    def __init__(self, path: Path, specials, pattern: str, eos: list[str | int]):
        import tiktoken

        if not path.is_file():
            raise CheckpointError(f"tiktoken vocabulary not found: {path}")
        ranks: dict[bytes, int] = {}
        for n, line in enumerate(path.read_bytes().splitlines(), 1):
            if not line.strip():
                continue
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            except ValueError as exc:
                raise CheckpointError(
                    f"{path}:{n} is not a tiktoken vocabulary line (base64 token, rank): {exc}"
                ) from exc
        if isinstance(specials, dict):
            special_ids = dict(specials)
        else:
            base = max(ranks.values()) + 1 if ranks else 0
            special_ids = {t: base + i for i, t in enumerate(specials)}
        self._enc = tiktoken.Encoding(
            name=path.stem, pat_str=pattern, mergeable_ranks=ranks, special_tokens=special_ids
        )
        self._id_to_special = {i: t for t, i in special_ids.items()}
        self.special_tokens = special_ids
        self.markup_tokens = dict(special_ids)
        self.vocab_size = self._enc.n_vocab
        self.eos_ids = _resolve_ids(self, eos) or _guess_eos(self)
        self.bos_id = None

    def encode(self, text: str, allow_special: bool = True) -> list[int]:
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode(text, disallowed_special=())

    def _encode_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        return self._with_offsets(self._enc.encode(text, allowed_special="all"), len(text))

    def _encode_plain(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        return self._with_offsets(self._enc.encode_ordinary(text), len(text))

    def _with_offsets(self, ids: list[int], length: int) -> tuple[list[int], list[tuple[int, int]]]:
        _, starts = self._enc.decode_with_offsets(ids)
        ends = starts[1:] + [length]
        return ids, list(zip(starts, ends))

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        if skip_special:
            ids = [i for i in ids if i not in self._id_to_special]
        return self._enc.decode(list(ids), errors="replace")

    def token_to_id(self, token: str) -> int | None:
        if token in self.special_tokens:
            return self.special_tokens[token]
        try:
            return self._enc.encode_single_token(token.encode("utf-8"))
        except KeyError:
            return None

    def id_to_token(self, token_id: int) -> str | None:
        if token_id in self._id_to_special:
            return self._id_to_special[token_id]
        try:
            raw = self._enc.decode_single_token_bytes(token_id)
        except KeyError:
            return None
        return raw.decode("utf-8", errors="backslashreplace")


def _resolve_ids(tok: Tokenizer, items: Iterable[str | int | None]) -> list[int]:
    out: list[int] = []
    for item in items:
        if item is None:
            continue
        tid = item if isinstance(item, int) else tok.token_to_id(item)
        if tid is not None and tid not in out:
            out.append(int(tid))
    return out


def _guess_eos(tok: Tokenizer) -> list[int]:
    return _resolve_ids(tok, [t for t in _END_TOKENS if t in tok.special_tokens])


def _gguf_tokenizer(ckpt: "GGUFCheckpoint") -> Tokenizer:
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers
    from tokenizers import Tokenizer as HFTok

    model = ckpt.field("tokenizer.ggml.model")
    if model != "gpt2":
        raise CheckpointError(
            f"{ckpt.path}: GGUF tokenizer model {model!r} is not supported (only byte-level BPE, "
            "'gpt2'). Use the checkpoint's tokenizer.json instead."
        )
    pre = ckpt.field("tokenizer.ggml.pre", "default")
    if pre not in _GGUF_PRE:
        raise CheckpointError(
            f"{ckpt.path}: GGUF pre-tokenizer {pre!r} is not supported "
            f"(known: {', '.join(sorted(_GGUF_PRE))})."
        )
    pattern, digits, nfc, ignore_merges = _GGUF_PRE[pre]
    tokens: list[str] = ckpt.field("tokenizer.ggml.tokens")
    merges_raw: list[str] = ckpt.field("tokenizer.ggml.merges") or []
    types: list[int] = ckpt.field("tokenizer.ggml.token_type") or [1] * len(tokens)

    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ", 1)) for m in merges_raw]
    tok = HFTok(models.BPE(vocab=vocab, merges=merges, ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    steps = []
    if digits:
        steps.append(pre_tokenizers.Digits(individual_digits=True))
    if pattern is not None:
        steps.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False))
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    else:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    added = [
        AddedToken(tokens[i], special=(t == _CONTROL), normalized=False)
        for i, t in enumerate(types)
        if t in (_CONTROL, _USER_DEFINED)
    ]
    tok.add_tokens(added)  # ids already exist in the vocab: this only marks them atomic
    eos = [ckpt.field(k) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                   "tokenizer.ggml.eom_token_id")]
    out = _HFTokenizer(tok, "gguf", eos=[int(e) for e in eos if e is not None],
                       bos=ckpt.field("tokenizer.ggml.bos_token_id"))
    out.vocab_size = len(tokens)
    # Chat models end turns with their own token (<|im_end|>, <|eot_id|>) even when the
    # GGUF's eos is <|endoftext|>: stop on all of them.
    for extra in _guess_eos(out):
        if extra not in out.eos_ids:
            out.eos_ids.append(extra)
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc


def _content(tok: Any) -> str | None:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok


def _folder_eos(folder: Path) -> list[str | int]:
    """EOS ids/tokens declared by generation_config.json, config.json, tokenizer_config.json."""
    out: list[str | int] = []
    for name in ("generation_config.json", "config.json"):
        eos = _read_json(folder / name).get("eos_token_id")
        out += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    tk = _content(_read_json(folder / "tokenizer_config.json").get("eos_token"))
    if tk:
        out.append(tk)
    return out


def load_tokenizer(folder: str | Path) -> Tokenizer:
    """The tokenizer of a checkpoint folder: `tokenizer.json`, else a tiktoken `tokenizer.model`."""
    folder = Path(folder)
    eos = _folder_eos(folder)
    if (folder / "tokenizer.json").is_file():
        return Tokenizer.from_tokenizer_json(folder / "tokenizer.json", eos_tokens=eos)
    model = folder / "tokenizer.model"
    if model.is_file():
        first = model.open("rb").readline().split()
        if len(first) == 2 and first[1].isdigit():
            specials: Sequence[str] | dict[str, int] = GLM4_SPECIAL_TOKENS
            cfg = _read_json(folder / "tokenizer_config.json")
            decoder = cfg.get("added_tokens_decoder")
            if decoder:
                specials = {_content(v): int(k) for k, v in decoder.items()}
            return Tokenizer.from_tiktoken(model, specials, eos_tokens=eos or _GLM4_EOS)
        raise CheckpointError(
            f"{model} is a SentencePiece model, which is not supported; provide tokenizer.json."
        )
    raise CheckpointError(
        f"no tokenizer in {folder}: expected tokenizer.json or a tiktoken tokenizer.model."
    )


class IncrementalDetokenizer:
    """Turns a stream of ids into text pieces that are complete characters.

    It decodes a short window of recent tokens and emits only the new suffix, holding text
    back while it ends in U+FFFD (a multi-byte character split across tokens). Decoding a
    window (not single tokens) keeps tokenizer-specific joining right, e.g. SentencePiece's
    leading-space rule. Invariant: the concatenation of all pieces, plus `flush()`, equals
    `decode(all ids)`.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = False):
        self._tok = tokenizer
        self._skip = skip_special
        self.ids: list[int] = []
        self._prefix = 0  # window start: text up to here has been emitted
        self._read = 0  # ids up to here are covered by emitted text

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        decode = self._tok.decode
        prefix_text = decode(self.ids[self._prefix : self._read], skip_special=self._skip)
        new_text = decode(self.ids[self._prefix :], skip_special=self._skip)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        prefix_text = self._tok.decode(self.ids[self._prefix : self._read], skip_special=self._skip)
        new_text = self._tok.decode(self.ids[self._prefix :], skip_special=self._skip)
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text) :]
