"""Decoder building blocks against transformers' reference functions."""

from __future__ import annotations

import pytest
import torch
from _random_engine import tiny_config
from torch import nn

from glm_agent.engine.decoder import Decoder, RMSNorm, apply_rope, rope_tables
from glm_agent.engine.loaders.safetensors import expected_shapes

pytest.importorskip("transformers")


def _hf_cos_sin(config, positions):
    """cos/sin as transformers builds them: cat(freqs, freqs) over rotary_dim."""
    cos, sin = rope_tables(config, int(positions.max()) + 1)
    cos, sin = cos[positions], sin[positions]
    return torch.cat([cos, cos], -1)[None], torch.cat([sin, sin], -1)[None]


def test_interleaved_partial_rope_matches_glm():
    from transformers.models.glm.modeling_glm import apply_rotary_pos_emb

    config = tiny_config("glm4", rope_theta=5e6)
    pos = torch.tensor([0, 1, 7, 100, 511])
    q, k = torch.randn(5, 4, 16), torch.randn(5, 2, 16)
    cos, sin = rope_tables(config, 512)
    got_q = apply_rope(q, cos[pos], sin[pos], "interleaved")
    got_k = apply_rope(k, cos[pos], sin[pos], "interleaved")
    hc, hs = _hf_cos_sin(config, pos)
    ref_q, ref_k = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], hc, hs)
    assert torch.allclose(got_q, ref_q[0].transpose(0, 1), atol=1e-6)
    assert torch.allclose(got_k, ref_k[0].transpose(0, 1), atol=1e-6)
    assert torch.equal(got_q[..., 8:], q[..., 8:])  # only rotary_dim = 8 dims rotate
    assert not torch.allclose(got_q[1:, :, :8], q[1:, :, :8])


def test_neox_rope_matches_qwen2():
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    config = tiny_config("qwen2", rope_theta=1e6)
    pos = torch.tensor([0, 3, 250])
    q, k = torch.randn(3, 4, 16), torch.randn(3, 2, 16)
    cos, sin = rope_tables(config, 256)
    got = apply_rope(q, cos[pos], sin[pos], "neox")
    hc, hs = _hf_cos_sin(config, pos)
    ref, _ = apply_rotary_pos_emb(q.transpose(0, 1)[None], k.transpose(0, 1)[None], hc, hs)
    assert torch.allclose(got, ref[0].transpose(0, 1), atol=1e-6)


def test_position_zero_is_identity_and_norm_preserved():
    config = tiny_config("glm4")
    cos, sin = rope_tables(config, 64)
    x = torch.randn(1, 2, 16)
    assert torch.allclose(apply_rope(x, cos[:1], sin[:1], "interleaved"), x)
    y = apply_rope(x, cos[33:34], sin[33:34], "neox")
    assert torch.allclose(y.norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_rmsnorm_matches_qwen2():
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

    ref = Qwen2RMSNorm(32, eps=1e-6)
    ours = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        ref.weight.normal_()
        ours.weight.copy_(ref.weight)
    x = torch.randn(5, 32) * 3
    assert torch.allclose(ours(x), ref(x), atol=1e-6)
    xb = x.bfloat16()
    assert torch.equal(ours.bfloat16()(xb), ref.bfloat16()(xb))


@pytest.mark.parametrize("arch", ["glm4", "glm4_0414", "qwen2", "llama"])
def test_canonical_names_and_plain_linears(arch):
    config = tiny_config(arch)
    with torch.device("meta"):
        model = Decoder(config)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == expected_shapes(config)
    for name in ("attn.qkv", "attn.o", "mlp.gate_up", "mlp.down"):
        assert type(model.layers[0].get_submodule(name)) is nn.Linear
    assert type(model.lm_head) is nn.Linear
    assert (model.layers[0].attn.qkv.bias is not None) == (arch != "llama")
    assert hasattr(model.layers[1], "post_mlp_norm") == (arch == "glm4_0414")


def test_bad_config_rejected():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        Decoder(tiny_config("glm4", num_kv_heads=3))
    with pytest.raises(ValueError, match="unsupported arch"):
        Decoder(tiny_config("mamba"))


def test_forward_needs_rope_tables():
    with pytest.raises(RuntimeError, match="init_rope"):
        Decoder(tiny_config("qwen2"))(torch.tensor([1, 2]), torch.tensor([0, 1]))
