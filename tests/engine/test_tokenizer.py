"""Tokenizers from GGUF / tokenizer.json / tiktoken, and streaming detokenization.

Reference ids were recorded on 2026-11-23 with transformers 5.23's own GGUF->tokenizers
converter (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`, `add_special_tokens=False`),
an implementation independent of ours, on the same GGUF vocabularies.
"""

from __future__ import annotations

import base64
import json

import pytest

from glm_agent.engine.embedded import embedded_model_path, smollm2_path
from glm_agent.engine.errors import CheckpointError
from glm_agent.engine.tokenizer import GLM4_SPECIAL_TOKENS, Tokenizer, load_tokenizer

SMOLLM2_IDS = [
    ("Hello world! 12345 and 3.14159", [19556, 905, 17, 216, 33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41]),
    ("你好，世界！今天天气很好。", [18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230, 8083, 219, 15076, 228, 18614, 119, 18614, 119, 177, 125, 238, 29157, 226, 48392, 138, 19076]),
    ("def f(x):\n    return x**2  # square\n\n\tprint(f(3))", [1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 5222, 1116, 197, 3272, 24, 86, 24, 35, 1292]),
    ("  leading   spaces\n\n\n trailing  ", [216, 2899, 256, 5600, 16506, 35079, 256]),
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", [1, 4093, 198, 26843, 2, 198, 1, 520, 9531, 198]),
    ("emoji 🎉👍🏽 café naïve", [391, 33777, 15107, 232, 227, 10813, 235, 231, 10813, 233, 138, 37366, 15486, 46494]),
    ("I'm can't WE'LL they'd", [57, 5248, 416, 982, 26587, 23, 16421, 502, 6737]),
]
QWEN_IDS = [
    ("Hello world! 12345 and 3.14159", [9707, 1879, 0, 220, 16, 17, 18, 19, 20, 323, 220, 18, 13, 16, 19, 16, 20, 24]),
    ("你好，世界！今天天气很好。", [108386, 3837, 99489, 6313, 100644, 104307, 101243, 1773]),
    ("def f(x):\n    return x**2  # square\n\n\tprint(f(3))", [750, 282, 2075, 982, 262, 470, 856, 334, 17, 220, 671, 9334, 271, 6900, 955, 7, 18, 593]),
    ("  leading   spaces\n\n\n trailing  ", [220, 6388, 256, 12621, 1406, 27748, 256]),
    ("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", [151644, 872, 198, 13048, 151645, 198, 151644, 77091, 198]),
    ("emoji 🎉👍🏽 café naïve", [37523, 11162, 236, 231, 144349, 145375, 51950, 94880, 586]),
    ("I'm can't WE'LL they'd", [40, 2776, 646, 944, 19677, 6, 4086, 807, 4172]),
]


@pytest.fixture(scope="module")
def smol() -> Tokenizer:
    return Tokenizer.from_gguf(smollm2_path())


@pytest.fixture(scope="module")
def qwen() -> Tokenizer:
    return Tokenizer.from_gguf(embedded_model_path(progress=False))


@pytest.mark.parametrize("text,ids", SMOLLM2_IDS)
def test_smollm2_gguf_ids(smol, text, ids):
    assert smol.encode(text) == ids
    assert smol.decode(ids) == text


@pytest.mark.parametrize("text,ids", QWEN_IDS)
def test_qwen_gguf_ids(qwen, text, ids):
    assert qwen.encode(text) == ids
    assert qwen.decode(ids) == text


def test_specials_and_eos(smol, qwen):
    assert smol.kind == "gguf" and smol.vocab_size == 49152
    assert smol.eos_ids[0] == 2 and smol.id_to_token(2) == "<|im_end|>"
    assert qwen.vocab_size == 151936
    assert qwen.eos_ids == [151645, 151643]  # <|im_end|> (GGUF eos), then <|endoftext|>
    assert qwen.special_tokens["<|im_start|>"] == 151644
    assert qwen.token_to_id("<tool_call>") == 151657
    # allow_special=False: special-token text is ordinary text.
    plain = qwen.encode("<|im_start|>", allow_special=False)
    assert 151644 not in plain and qwen.decode(plain) == "<|im_start|>"
    assert qwen.decode([151644, 872], skip_special=True) == "user"


def _stream(tok, ids):
    det = tok.detokenizer()
    pieces = [det.push(i) for i in ids]
    pieces.append(det.flush())
    return pieces


@pytest.mark.parametrize("text", [
    "你好，世界！今天天气很好。",
    "emoji 🎉👍🏽 and 👨‍👩‍👧 family, café",
    " leading space, then 中文 mixed with English and 日本語のテキスト。",
    "def f():\n    return '✓'\n",
])
def test_incremental_detokenizer(smol, qwen, text):
    for tok in (smol, qwen):
        ids = tok.encode(text)
        pieces = _stream(tok, ids)
        assert "".join(pieces) == tok.decode(ids) == text
        assert not any("\ufffd" in p for p in pieces)
    # SmolLM2 has few CJK tokens: characters really are split into byte tokens.
    ids = smol.encode("你好")
    assert len(ids) > 2 and sum(1 for p in _stream(smol, ids) if p) == 2


def test_incremental_detokenizer_truncated_character(smol):
    ids = smol.encode("ok 🎉")[:-1]  # generation stopped mid-character
    pieces = _stream(smol, ids)
    assert "".join(pieces) == smol.decode(ids)
    assert not any("\ufffd" in p for p in pieces[:-1])  # only the final flush may hold it


def test_sentencepiece_leading_space_rule():
    """A Metaspace (SentencePiece-style) tokenizer drops the first token's '▁' on decode; the
    stream must agree with decode(all) and still emit the spaces between words."""
    from tokenizers import Tokenizer as HFTok
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "▁Hello": 1, "▁world": 2, "!": 3, "▁": 4}
    tok = HFTok(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    from glm_agent.engine.tokenizer import _HFTokenizer

    ours = _HFTokenizer(tok, "hf", eos=[])
    ids = [1, 2, 3]
    pieces = _stream(ours, ids)
    assert "".join(pieces) == ours.decode(ids) == "Hello world!"
    assert pieces[:3] == ["Hello", " world", "!"]


def test_tokenizer_json_roundtrip(tmp_path, smol):
    """A GGUF-built tokenizer saved as tokenizer.json loads back identically via `tokenizers`."""
    smol._tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 0]}))
    hf = load_tokenizer(tmp_path)
    assert hf.kind == "hf" and hf.eos_ids == [2, 0]
    for text, ids in SMOLLM2_IDS:
        assert hf.encode(text) == ids


def _tiktoken_file(path):
    # 256 single bytes + a few merges, in rank order (as GLM-4's tokenizer.model lists them).
    tokens = [bytes([b]) for b in range(256)] + [b"he", b"ll", b"hell", b"hello", b" w", b" wor", b"ld"]
    path.write_bytes(b"\n".join(base64.b64encode(t) + b" " + str(i).encode() for i, t in enumerate(tokens)))
    return len(tokens)


def test_tiktoken_glm4_specials(tmp_path):
    n = _tiktoken_file(tmp_path / "tokenizer.model")
    tok = load_tokenizer(tmp_path)
    assert tok.kind == "tiktoken"
    assert tok.special_tokens["<|endoftext|>"] == n  # ids start after the ranks (151329 for GLM-4)
    assert tok.special_tokens["[gMASK]"] == n + 2 and tok.special_tokens["<|observation|>"] == n + 9
    assert tok.vocab_size == n + len(GLM4_SPECIAL_TOKENS)
    assert tok.eos_ids == [n, n + 7, n + 9]  # endoftext, user, observation
    ids = tok.encode("[gMASK]<sop><|user|>\nhello world你好")
    assert ids[:3] == [n + 2, n + 4, n + 7]
    assert tok.token_to_id("hello") in ids
    assert tok.decode(ids) == "[gMASK]<sop><|user|>\nhello world你好"
    assert n + 2 not in tok.encode("[gMASK]", allow_special=False)
    pieces = _stream(tok, tok.encode("你好 world"))
    assert "".join(pieces) == "你好 world" and not any("\ufffd" in p for p in pieces)


def test_missing_tokenizer_is_clear(tmp_path):
    with pytest.raises(CheckpointError, match="no tokenizer"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\x05hello garbage")
    with pytest.raises(CheckpointError, match="SentencePiece"):
        load_tokenizer(tmp_path)
