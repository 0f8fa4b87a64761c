"""One decoder for GLM-4, GLM-4-0414, Qwen2 and Llama, switched by `ModelConfig`.

    glm4       fused QKV with bias, partial *interleaved* RoPE (rotary_dim = head_dim *
               partial_rotary_factor), GQA, RMSNorm, SwiGLU (gate rows first), untied lm_head
    glm4_0414  glm4 + "sandwich" norms after attention and after the MLP
    qwen2      full rotate-half ("neox") RoPE, QKV bias
    llama      neox RoPE, no bias (GGUF Q/K rows are un-permuted by the loader)

Parameter names are the canonical ones of `model/config.py`. Every linear is a plain
`nn.Linear` named `attn.qkv`, `attn.o`, `mlp.gate_up`, `mlp.down`, `lm_head`, so that the
quantizer can swap them for `QuantLinear` modules with the same call signature.

Activations are flat: the tokens of every stream advanced in one call are concatenated into
rows `[N, hidden]` (no padding), and the paged cache's `AttnBatch` says which rows belong to
which stream. Without a cache, `forward` runs plain causal attention over one sequence.

Public API:
    Decoder(config: ModelConfig)
    Decoder.forward(ids: LongTensor[N], positions: LongTensor[N], cache: PagedKVCache | None
                    = None, batch: AttnBatch | None = None, logits_at: LongTensor | None = None)
        -> FloatTensor[len(logits_at) or N, vocab]
    Decoder.init_rope(max_positions: int, device) -> None   (call once weights are loaded)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from glm_agent.engine.config import ModelConfig

__all__ = ["Decoder", "DecoderLayer", "Attention", "MLP", "RMSNorm", "rope_tables", "rope_factors", "rope_swap",
           "apply_rope"]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 like the reference implementations, scale in the model dtype.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_tables(config: ModelConfig, max_positions: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin `[max_positions, rotary_dim // 2]` in float32 (one frequency per pair)."""
    dim = config.rotary_dim
    inv_freq = 1.0 / (
        config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(device=device, dtype=torch.float) / dim)
    )
    pos = torch.arange(max_positions, device=device, dtype=torch.float)
    freqs = torch.outer(pos, inv_freq)
    return freqs.cos(), freqs.sin()


def rope_factors(cos: torch.Tensor, sin: torch.Tensor, style: str, head_dim: int, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dim factors `[N, 1, head_dim]` so that rope(x) = x * cf + rope_swap(x) * sf.

    Built once per forward and shared by every layer (at batch 1 the per-layer cost of RoPE
    is op dispatch, so 4 ops per layer instead of ~10 matter). The sign of the rotation sits
    in `sf`; dims past rotary_dim get cf = 1, sf = 0 and pass through unchanged.
    """
    c, s = cos.to(dtype), sin.to(dtype)
    if style == "interleaved":  # pairs (2i, 2i+1) share frequency i (ChatGLM / GPT-J)
        cf = torch.stack((c, c), dim=-1).flatten(-2)
        sf = torch.stack((-s, s), dim=-1).flatten(-2)
    else:  # neox / rotate-half: dims i and i + rot/2 share frequency i
        cf = torch.cat((c, c), dim=-1)
        sf = torch.cat((-s, s), dim=-1)
    rest = head_dim - cf.shape[-1]
    if rest:
        cf = torch.cat((cf, cf.new_ones(cf.shape[0], rest)), dim=-1)
        sf = torch.cat((sf, sf.new_zeros(sf.shape[0], rest)), dim=-1)
    return cf[:, None, :], sf[:, None, :]


def rope_swap(x: torch.Tensor, style: str, rot: int) -> torch.Tensor:
    """The partner of each rotated dim of `x` `[N, heads, D]` (values past `rot` are don't-care)."""
    if style == "interleaved":
        return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)
    half = rot // 2
    parts = (x[..., half:rot], x[..., :half]) + ((x[..., rot:],) if rot < x.shape[-1] else ())
    return torch.cat(parts, dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, style: str) -> torch.Tensor:
    """Rotate the first `2 * cos.shape[-1]` dims of `x` `[N, heads, D]`; cos/sin `[N, rot/2]`."""
    cf, sf = rope_factors(cos, sin, style, x.shape[-1], x.dtype)
    return _rope(x, cf, sf, style, 2 * cos.shape[-1])


def _rope(x, cf, sf, style: str, rot: int) -> torch.Tensor:
    # Same roundings as the textbook form: x0*c - x1*s == x0*c + x1*(-s) exactly.
    return x * cf + rope_swap(x, style, rot) * sf


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_heads
        self.num_kv_heads = config.num_kv_heads
        self.head_dim = config.head_dim
        self.rope_style = config.rope_style
        self.rotary_dim = config.rotary_dim
        q_size = config.num_heads * config.head_dim
        kv_size = config.num_kv_heads * config.head_dim
        self.qkv = nn.Linear(config.hidden_size, q_size + 2 * kv_size, bias=config.qkv_bias)
        self.o = nn.Linear(q_size, config.hidden_size, bias=False)

    def forward(self, x, cos, sin, cache=None, batch=None) -> torch.Tensor:
        n = x.shape[0]
        h, hk = self.num_heads, self.num_kv_heads
        qkv = self.qkv(x).view(n, h + 2 * hk, self.head_dim)
        # cos/sin are Decoder.forward's rope_factors: q and k rotate in one call.
        qk = _rope(qkv[:, : h + hk], cos, sin, self.rope_style, self.rotary_dim)
        q, k, v = qk[:, :h], qk[:, h:], qkv[:, h + hk :]
        if cache is None:
            out = F.scaled_dot_product_attention(
                q.transpose(0, 1)[None],
                k.transpose(0, 1)[None],
                v.transpose(0, 1)[None],
                is_causal=True,
                enable_gqa=True,
            )[0].transpose(0, 1)
        else:
            cache.write(self.layer_idx, batch.slots, k, v)
            out = cache.attend(self.layer_idx, q, batch)
        return self.o(out.reshape(n, -1))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.down = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        eps = config.rms_norm_eps
        self.attn_norm = RMSNorm(config.hidden_size, eps)
        self.attn = Attention(config, layer_idx)
        self.mlp_norm = RMSNorm(config.hidden_size, eps)
        self.mlp = MLP(config)
        self.sandwich = config.sandwich_norms
        if self.sandwich:
            self.post_attn_norm = RMSNorm(config.hidden_size, eps)
            self.post_mlp_norm = RMSNorm(config.hidden_size, eps)

    def forward(self, x, cos, sin, cache=None, batch=None) -> torch.Tensor:
        h = self.attn(self.attn_norm(x), cos, sin, cache, batch)
        if self.sandwich:
            h = self.post_attn_norm(h)
        x = x + h
        h = self.mlp(self.mlp_norm(x))
        if self.sandwich:
            h = self.post_mlp_norm(h)
        return x + h


class Decoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.arch not in ("glm4", "glm4_0414", "qwen2", "llama"):
            raise ValueError(f"unsupported arch {config.arch!r}")
        if config.num_heads % config.num_kv_heads:
            raise ValueError("num_heads must be a multiple of num_kv_heads")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        # Tied checkpoints store no lm_head.weight; the engine points it at embed.weight.
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.cos: torch.Tensor | None = None
        self.sin: torch.Tensor | None = None

    def init_rope(self, max_positions: int, device=None) -> None:
        self.cos, self.sin = rope_tables(self.config, max_positions, device)

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cache=None,
        batch=None,
        logits_at: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.cos is None:
            raise RuntimeError("call Decoder.init_rope(max_positions) before forward")
        x = self.embed(ids)
        # Tables are float32; cast once per forward like transformers (cos/sin in input dtype),
        # and expanded to per-dim factors once for all layers.
        c = self.config
        cos, sin = rope_factors(self.cos.index_select(0, positions), self.sin.index_select(0, positions),
                                c.rope_style, c.head_dim, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, cache, batch)
        if logits_at is not None:
            x = x.index_select(0, logits_at)  # lm_head only where logits are needed
        return self.lm_head(self.norm(x))
