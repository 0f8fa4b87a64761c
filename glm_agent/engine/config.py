"""One config for every decoder the engine runs (GLM-4, GLM-4-0414, Qwen2, Llama).

Loaders translate a checkpoint's own config (ChatGLM `config.json`, HF `GlmConfig` /
`Glm4Config` / `Qwen2Config`, or GGUF metadata) into this dataclass; the decoder reads
nothing else. Every number comes from the checkpoint: there are no GLM-4-9B defaults here.

Canonical parameter names (what loaders produce and the decoder owns):

    embed.weight                         [vocab, hidden]
    layers.{i}.attn_norm.weight          [hidden]
    layers.{i}.attn.qkv.weight           [(heads + 2*kv_heads) * head_dim, hidden]  rows q | k | v
    layers.{i}.attn.qkv.bias             same rows, only when qkv_bias
    layers.{i}.attn.o.weight             [hidden, heads * head_dim]
    layers.{i}.post_attn_norm.weight     [hidden]   only when sandwich_norms (GLM-4-0414)
    layers.{i}.mlp_norm.weight           [hidden]
    layers.{i}.mlp.gate_up.weight        [2 * intermediate, hidden]  rows gate | up
    layers.{i}.mlp.down.weight           [hidden, intermediate]
    layers.{i}.post_mlp_norm.weight      [hidden]   only when sandwich_norms
    norm.weight                          [hidden]
    lm_head.weight                       [vocab, hidden]  absent when tie_embeddings

Q/K rows are in the order the chosen `rope_style` expects: loaders undo llama.cpp's
Q/K row permutation so that Llama GGUFs use "neox" like their HF originals.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["ModelConfig"]

Arch = Literal["glm4", "glm4_0414", "qwen2", "llama"]
RopeStyle = Literal["interleaved", "neox"]


@dataclass
class ModelConfig:
    arch: Arch
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    max_position: int
    # Fraction of each head's dims that RoPE rotates (GLM: 0.5, Qwen2/Llama: 1.0).
    partial_rotary_factor: float = 1.0
    # "interleaved": pairs (2i, 2i+1), as ChatGLM / GlmForCausalLM. "neox": rotate-half.
    rope_style: RopeStyle = "neox"
    qkv_bias: bool = False
    # GLM-4-0414: extra RMSNorm after attention and after the MLP.
    sandwich_norms: bool = False
    tie_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    # Weight-only quantization the stored checkpoint already carries (None = float).
    quant: dict | None = None

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig keys: {sorted(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
