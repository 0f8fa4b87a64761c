"""GGUF checkpoints (llama.cpp's format): metadata -> ModelConfig, tensors -> canonical weights.

Every tensor is dequantized on its own with the `gguf` package (numpy) and converted to the
requested torch dtype, so peak memory is one layer of float32 plus the model in `dtype`.
llama.cpp names are mapped to the canonical names of `model/config.py`: q/k/v are fused into
`attn.qkv`, gate/up into `mlp.gate_up`.

Two llama.cpp conventions need undoing:
- the HF->GGUF converter permutes the Q/K rows of `llama`-arch models so that llama.cpp's
  GPT-J-style RoPE gives the HF result; we permute them back and use neox RoPE like HF does.
  `qwen2` is stored unpermuted (llama.cpp runs it with neox RoPE), and so are the GLM archs
  (interleaved RoPE on a partial head, exactly as their HF code).
- a missing `output.weight` means the output is tied to `token_embd`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["GGUFCheckpoint", "load_gguf_checkpoint", "GGUF_MAGIC"]

GGUF_MAGIC = b"GGUF"

# GGUF `general.architecture` -> (our arch, RoPE style in the stored rows, sandwich norms).
_ARCHS = {
    "qwen2": ("qwen2", "neox", False),
    "llama": ("llama", "neox", False),  # after un-permuting Q/K
    "chatglm": ("glm4", "interleaved", False),  # glm-4-9b-chat
    "glm4": ("glm4_0414", "interleaved", True),  # GLM-4-0414 (Glm4ForCausalLM)
}
_PERMUTED_ARCHS = {"llama"}
# Metadata arrays too big to load eagerly (the vocabulary).
_BULK_KEYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type",
              "tokenizer.ggml.scores")


def _unpermute(w: "torch.Tensor", n_head: int) -> "torch.Tensor":
    """Inverse of llama.cpp's convert_hf_to_gguf `permute` (pairs -> halves per head)."""
    rows = w.shape[0]
    return (
        w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
        .transpose(1, 2)
        .reshape(w.shape)
    )


# GGUF value types (gguf spec) -> struct format; 8 = string, 9 = array.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_NP_TYPES = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
             10: "<u8", 11: "<i8", 12: "<f8"}


@dataclass
class _Tensor:
    name: str
    shape: tuple[int, ...]  # GGUF order (fastest dimension first)
    qtype: int
    offset: int  # from the start of the data section

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


class _Cursor:
    """Sequential little-endian reads over a memory-mapped file."""

    def __init__(self, buf: Any, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> Any:
        if self.pos + n > len(self.buf):
            raise CheckpointError(
                f"{self.path} is truncated (its header ends early at byte {len(self.buf)}); "
                "download or re-assemble the file again."
            )
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar("<Q"))).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype == 8:
            return self.string()
        if vtype == 9:
            itype, count = self.scalar("<I"), self.scalar("<Q")
            if itype == 8:
                return [self.string() for _ in range(count)]
            if itype in _NP_TYPES:
                import numpy as np

                dt = np.dtype(_NP_TYPES[itype])
                return np.frombuffer(self.take(count * dt.itemsize), dtype=dt).tolist()
            return [self.value(itype) for _ in range(count)]
        if vtype not in _SCALARS:
            raise CheckpointError(f"{self.path}: unknown GGUF value type {vtype}")
        return self.scalar(_SCALARS[vtype])


def _parse(path: Path) -> tuple[dict[str, Any], dict[str, _Tensor], int, Any]:
    """Header, metadata and tensor table of a GGUF file. Our own parser: gguf.GGUFReader
    takes ~8 s on a 150k-token vocabulary, this takes a fraction of a second."""
    import numpy as np

    buf = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(buf), path)
    if bytes(cur.take(4)) != GGUF_MAGIC:
        raise CheckpointError(f"{path} is not a GGUF file")
    version = cur.scalar("<I")
    if version not in (2, 3):
        raise CheckpointError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
    fields: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        fields[key] = cur.value(cur.scalar("<I"))
    tensors: dict[str, _Tensor] = {}
    for _ in range(n_tensors):
        name = cur.string()
        ndim = cur.scalar("<I")
        shape = tuple(cur.scalar("<Q") for _ in range(ndim))
        qtype, offset = cur.scalar("<I"), cur.scalar("<Q")
        tensors[name] = _Tensor(name, shape, qtype, offset)
    align = int(fields.get("general.alignment", 32))
    data_start = (cur.pos + align - 1) // align * align
    return fields, tensors, data_start, buf


class GGUFCheckpoint:
    """An opened GGUF file: metadata, config, tokenizer data, chat template, weights.

    The file is memory-mapped; nothing is dequantized until `weights()`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"GGUF file not found: {self.path}")
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise CheckpointError(
                f"{self.path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). "
                "Pass a .gguf model file, or a folder with safetensors + config.json."
            )
        self._fields, self._tensors, self._data_start, self._buf = _parse(self.path)
        self._check_complete()

    def _check_complete(self) -> None:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        end = self._data_start
        for t in self._tensors.values():
            try:
                block, size = GGML_QUANT_SIZES[GGMLQuantizationType(t.qtype)]
            except (ValueError, KeyError):
                raise CheckpointError(
                    f"{self.path}: tensor {t.name} has an unknown type id {t.qtype}; "
                    "this file needs a newer gguf package or is not supported."
                ) from None
            end = max(end, self._data_start + t.offset + t.n_elements // block * size)
        if end > len(self._buf):
            raise CheckpointError(
                f"{self.path} is truncated: its tensors need {end:,} bytes but the file has "
                f"{len(self._buf):,}. Download or re-assemble it again."
            )

    # ---- metadata -------------------------------------------------------------------------
    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Metadata without the big vocabulary arrays."""
        return {k: v for k, v in self._fields.items() if k not in _BULK_KEYS}

    def field(self, key: str, default: Any = None) -> Any:
        return self._fields.get(key, default)

    @property
    def gguf_arch(self) -> str:
        arch = self.metadata.get("general.architecture")
        if arch is None:
            raise CheckpointError(f"{self.path}: GGUF metadata has no general.architecture")
        return arch

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def name(self) -> str:
        return self.metadata.get("general.name") or self.path.stem

    def tensor_types(self) -> dict[str, int]:
        from gguf import GGMLQuantizationType

        counts: dict[str, int] = {}
        for t in self._tensors.values():
            name = GGMLQuantizationType(t.qtype).name
            counts[name] = counts.get(name, 0) + 1
        return counts

    def num_params(self) -> int:
        return sum(t.n_elements for t in self._tensors.values())

    @cached_property
    def config(self) -> ModelConfig:
        gg_arch = self.gguf_arch
        if gg_arch not in _ARCHS:
            raise CheckpointError(
                f"{self.path}: GGUF architecture {gg_arch!r} is not supported "
                f"(supported: {', '.join(sorted(_ARCHS))})."
            )
        arch, rope_style, sandwich = _ARCHS[gg_arch]
        m = self.metadata

        def need(key: str):
            full = f"{gg_arch}.{key}"
            if full not in m:
                raise CheckpointError(f"{self.path}: GGUF metadata lacks {full}")
            return m[full]

        hidden = int(need("embedding_length"))
        heads = int(need("attention.head_count"))
        kv_heads = int(m.get(f"{gg_arch}.attention.head_count_kv", heads))
        head_dim = int(m.get(f"{gg_arch}.attention.key_length", hidden // heads))
        rot = int(m.get(f"{gg_arch}.rope.dimension_count", head_dim))
        ffn = int(need("feed_forward_length"))
        if "token_embd.weight" not in self._tensors:
            raise CheckpointError(f"{self.path}: no token_embd.weight tensor")
        vocab = int(self._tensors["token_embd.weight"].shape[-1])
        if "rope_freqs.weight" in self._tensors:
            raise CheckpointError(
                f"{self.path}: this GGUF uses RoPE frequency scaling (rope_freqs, e.g. Llama 3.1); "
                "that is not supported by the engine."
            )
        eos = []
        for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                    "tokenizer.ggml.eom_token_id"):
            if key in m and int(m[key]) not in eos:
                eos.append(int(m[key]))
        bos = m.get("tokenizer.ggml.bos_token_id")
        pad = m.get("tokenizer.ggml.padding_token_id")
        return ModelConfig(
            arch=arch,
            vocab_size=vocab,
            hidden_size=hidden,
            intermediate_size=ffn,
            num_layers=int(need("block_count")),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rope_theta=float(m.get(f"{gg_arch}.rope.freq_base", 10000.0)),
            rms_norm_eps=float(need("attention.layer_norm_rms_epsilon")),
            max_position=int(m.get(f"{gg_arch}.context_length", 4096)),
            partial_rotary_factor=rot / head_dim,
            rope_style=rope_style,
            qkv_bias="blk.0.attn_q.bias" in self._tensors or "blk.0.attn_qkv.bias" in self._tensors,
            sandwich_norms=sandwich,
            tie_embeddings="output.weight" not in self._tensors,
            bos_token_id=None if bos is None else int(bos),
            eos_token_ids=eos,
            pad_token_id=None if pad is None else int(pad),
        )

    # ---- weights --------------------------------------------------------------------------
    def _load(self, name: str, dtype: "torch.dtype") -> "torch.Tensor":
        import numpy as np
        import torch
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        t = self._tensors.get(name)
        if t is None:
            raise CheckpointError(f"{self.path}: tensor {name} is missing")
        try:
            qtype = GGMLQuantizationType(t.qtype)
        except ValueError:
            raise CheckpointError(f"{self.path}: tensor {name} has unknown type {t.qtype}") from None
        block, type_size = GGML_QUANT_SIZES[qtype]
        shape = tuple(reversed(t.shape))  # (rows, cols): nn.Linear's (out, in) layout
        row_bytes = shape[-1] // block * type_size
        start = self._data_start + t.offset
        nbytes = t.n_elements // block * type_size
        if start + nbytes > len(self._buf):
            raise CheckpointError(
                f"{self.path} is truncated: tensor {name} ends past the end of the file. "
                "Download or re-assemble it again."
            )
        raw = self._buf[start : start + nbytes]
        if qtype == GGMLQuantizationType.BF16:
            bits = torch.from_numpy(np.array(raw).view(np.int16))
            return bits.view(torch.bfloat16).reshape(shape).to(dtype)
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            arr = np.array(raw).view(np.float32 if qtype == GGMLQuantizationType.F32 else np.float16)
        else:
            try:
                arr = dequantize(raw.reshape(-1, row_bytes), qtype)
            except NotImplementedError as exc:
                raise CheckpointError(
                    f"{self.path}: tensor {name} has type {qtype.name}, which the installed "
                    f"`gguf` package cannot dequantize ({exc}). Upgrade gguf or use another "
                    "quantization of the model."
                ) from exc
        return torch.from_numpy(arr).reshape(shape).to(dtype)

    def _has(self, name: str) -> bool:
        return name in self._tensors

    def weights(self, dtype: "torch.dtype | None" = None) -> Iterator[tuple[str, "torch.Tensor"]]:
        """Yield (canonical name, tensor) one at a time, in model order."""
        import torch

        dtype = dtype or torch.float32
        cfg = self.config
        permuted = self.gguf_arch in _PERMUTED_ARCHS
        cat = torch.cat
        yield "embed.weight", self._load("token_embd.weight", dtype)
        for i in range(cfg.num_layers):
            b = f"blk.{i}."
            p = f"layers.{i}."
            yield p + "attn_norm.weight", self._load(b + "attn_norm.weight", dtype)
            if self._has(b + "attn_qkv.weight"):
                yield p + "attn.qkv.weight", self._load(b + "attn_qkv.weight", dtype)
                if self._has(b + "attn_qkv.bias"):
                    yield p + "attn.qkv.bias", self._load(b + "attn_qkv.bias", dtype)
            else:
                q = self._load(b + "attn_q.weight", dtype)
                k = self._load(b + "attn_k.weight", dtype)
                if permuted:
                    q, k = _unpermute(q, cfg.num_heads), _unpermute(k, cfg.num_kv_heads)
                yield p + "attn.qkv.weight", cat([q, k, self._load(b + "attn_v.weight", dtype)])
                if self._has(b + "attn_q.bias"):
                    qb = self._load(b + "attn_q.bias", dtype)
                    kb = self._load(b + "attn_k.bias", dtype)
                    if permuted:
                        qb, kb = _unpermute(qb, cfg.num_heads), _unpermute(kb, cfg.num_kv_heads)
                    yield p + "attn.qkv.bias", cat([qb, kb, self._load(b + "attn_v.bias", dtype)])
            yield p + "attn.o.weight", self._load(b + "attn_output.weight", dtype)
            if cfg.sandwich_norms:
                yield p + "post_attn_norm.weight", self._load(b + "post_attention_norm.weight", dtype)
            yield p + "mlp_norm.weight", self._load(b + "ffn_norm.weight", dtype)
            if self._has(b + "ffn_gate.weight"):
                gate = self._load(b + "ffn_gate.weight", dtype)
                yield p + "mlp.gate_up.weight", cat([gate, self._load(b + "ffn_up.weight", dtype)])
            else:  # GLM archs store the fused [gate | up] projection as ffn_up
                yield p + "mlp.gate_up.weight", self._load(b + "ffn_up.weight", dtype)
            yield p + "mlp.down.weight", self._load(b + "ffn_down.weight", dtype)
            if cfg.sandwich_norms:
                yield p + "post_mlp_norm.weight", self._load(b + "post_ffw_norm.weight", dtype)
        yield "norm.weight", self._load("output_norm.weight", dtype)
        if not cfg.tie_embeddings:
            yield "lm_head.weight", self._load("output.weight", dtype)


def load_gguf_checkpoint(
    path: str | Path, dtype: "torch.dtype | None" = None
) -> tuple[ModelConfig, Iterator[tuple[str, "torch.Tensor"]]]:
    """(ModelConfig, lazy iterator of canonical weights) for a GGUF file."""
    ckpt = GGUFCheckpoint(path)
    return ckpt.config, ckpt.weights(dtype)
