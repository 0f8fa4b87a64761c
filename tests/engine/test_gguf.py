"""GGUF loader: metadata -> ModelConfig, dequantization, name mapping, Q/K un-permutation.

Synthetic GGUFs are written from tiny transformers models in llama.cpp's exact layout
(tests/model/_gguf_fixtures.py); our engine must then reproduce transformers' logits.
The real SmolLM2 / Qwen files check every quant type present against `gguf.GGUFReader`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _gguf_fixtures import write_gguf
from _hf_checkpoints import make_hf_model

from glm_agent.engine.embedded import smollm2_path
from glm_agent.engine.errors import CheckpointError
from glm_agent.engine.loaders.gguf import GGUFCheckpoint, load_gguf_checkpoint


def _engine(config, weights):
    from glm_agent.engine.engine import Engine

    return Engine.from_weights(config, weights, device="cpu", dtype=torch.float32)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "glm", "glm4"])
def test_synthetic_gguf_matches_transformers_logits(tmp_path, arch):
    model = make_hf_model(arch, seed=1)
    path = write_gguf(model, tmp_path / f"{arch}.gguf", arch)
    config, weights = load_gguf_checkpoint(path)
    expected_arch = {"llama": "llama", "qwen2": "qwen2", "glm": "glm4", "glm4": "glm4_0414"}[arch]
    assert config.arch == expected_arch
    assert config.num_layers == model.config.num_hidden_layers
    assert config.num_kv_heads == model.config.num_key_value_heads
    assert config.sandwich_norms == (arch == "glm4")
    assert config.rope_style == ("interleaved" if arch in ("glm", "glm4") else "neox")
    engine = _engine(config, weights)
    ids = list(range(3, 40, 2)) + [200, 7, 7, 255]
    ours = engine.forward_logits(ids)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].float()
    assert (ours - ref).abs().max().item() < 1e-4


def test_llama_qk_rows_are_unpermuted_exactly(tmp_path):
    model = make_hf_model("llama", seed=2)
    path = write_gguf(model, tmp_path / "llama.gguf", "llama")
    weights = dict(GGUFCheckpoint(path).weights(torch.float32))
    sd = model.state_dict()
    qkv = weights["layers.1.attn.qkv.weight"]
    want = torch.cat([sd[f"model.layers.1.self_attn.{p}_proj.weight"] for p in "qkv"])
    assert torch.equal(qkv, want)
    gate_up = weights["layers.0.mlp.gate_up.weight"]
    assert torch.equal(gate_up, torch.cat([sd["model.layers.0.mlp.gate_proj.weight"],
                                           sd["model.layers.0.mlp.up_proj.weight"]]))


def test_tied_output_when_output_weight_absent(tmp_path):
    model = make_hf_model("llama", seed=3, tie_word_embeddings=True)
    path = write_gguf(model, tmp_path / "tied.gguf", "llama")
    config, weights = load_gguf_checkpoint(path)
    assert config.tie_embeddings
    assert "lm_head.weight" not in dict(weights)


def test_quantized_synthetic_gguf_q8_0_is_close(tmp_path):
    import gguf

    model = make_hf_model("qwen2", seed=4, hidden_size=64, intermediate_size=128)
    path = write_gguf(model, tmp_path / "q8.gguf", "qwen2", qtype=gguf.GGMLQuantizationType.Q8_0)
    ck = GGUFCheckpoint(path)
    assert ck.tensor_types()["Q8_0"] > 0
    w = dict(ck.weights(torch.float32))
    ref = model.state_dict()["model.layers.0.self_attn.o_proj.weight"]
    err = (w["layers.0.attn.o.weight"] - ref).abs().max().item()
    assert 0 < err < 0.01 * ref.abs().max().item()  # quantized (not equal), but close


def test_smollm2_metadata_config():
    ck = GGUFCheckpoint(smollm2_path())
    c = ck.config
    assert (c.arch, c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads) == ("llama", 30, 576, 9, 3)
    assert (c.head_dim, c.intermediate_size, c.vocab_size, c.max_position) == (64, 1536, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.tie_embeddings and not c.qkv_bias
    assert ck.tensor_types() == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert ck.num_params() == 134_515_008
    assert ck.chat_template.startswith("{% for message in messages %}")


def test_real_dequantization_matches_gguf_reader():
    """Our header parser + offsets + dequantization agree with gguf's own reader (Q4_1, Q8_0, F32).
    Q4_K / Q6_K are exercised end to end by the embedded model tests."""
    import gguf
    from gguf.quants import dequantize

    path = smollm2_path()
    ck = GGUFCheckpoint(path)
    by_name = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    for name in ["token_embd.weight", "blk.2.ffn_down.weight", "blk.29.attn_k.weight",
                 "blk.2.attn_norm.weight", "output_norm.weight"]:
        t = by_name[name]
        ref = np.asarray(dequantize(t.data, t.tensor_type)).reshape(tuple(reversed(t.shape.tolist())))
        ours = ck._load(name, torch.float32).numpy()
        assert np.array_equal(ours, ref), name


def test_missing_file_and_not_gguf(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        GGUFCheckpoint(tmp_path / "nope.gguf")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(CheckpointError, match="not a GGUF file"):
        GGUFCheckpoint(bad)


def test_truncated_file(tmp_path):
    model = make_hf_model("qwen2", seed=5)
    path = write_gguf(model, tmp_path / "t.gguf", "qwen2")
    data = path.read_bytes()
    (tmp_path / "cut_data.gguf").write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated"):
        GGUFCheckpoint(tmp_path / "cut_data.gguf")
    (tmp_path / "cut_header.gguf").write_bytes(data[:200])
    with pytest.raises(CheckpointError, match="truncated"):
        GGUFCheckpoint(tmp_path / "cut_header.gguf")


def test_unsupported_architecture(tmp_path):
    model = make_hf_model("llama", seed=6)
    path = write_gguf(model, tmp_path / "g.gguf", "llama", gguf_arch="gemma3")
    ck = GGUFCheckpoint(path)
    with pytest.raises(CheckpointError, match="architecture 'gemma3' is not supported"):
        _ = ck.config  # the config is read (and checked) on first access
