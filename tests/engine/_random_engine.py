"""A tiny engine with random weights for any arch (no transformers needed)."""

from __future__ import annotations

import torch

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.engine import Engine
from glm_agent.engine.loaders.safetensors import expected_shapes

__all__ = ["tiny_config", "random_weights", "random_engine"]


def tiny_config(arch: str = "glm4", **overrides) -> ModelConfig:
    glm = arch in ("glm4", "glm4_0414")
    kw = dict(
        arch=arch,
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rope_theta=10000.0,
        rms_norm_eps=1e-5,
        max_position=512,
        partial_rotary_factor=0.5 if glm else 1.0,
        rope_style="interleaved" if glm else "neox",
        qkv_bias=arch != "llama",
        sandwich_norms=arch == "glm4_0414",
        eos_token_ids=[1],
    )
    kw.update(overrides)
    return ModelConfig(**kw)


def random_weights(config: ModelConfig, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    for name, shape in expected_shapes(config).items():
        if "norm" in name:
            t = 1 + 0.2 * torch.randn(shape, generator=g)
        elif name == "embed.weight":
            t = torch.randn(shape, generator=g)
        else:
            t = 0.15 * torch.randn(shape, generator=g)
        yield name, t


def random_engine(arch: str = "glm4", seed: int = 0, **engine_kw) -> Engine:
    config = tiny_config(arch)
    return Engine.from_weights(config, random_weights(config, seed), **engine_kw)
