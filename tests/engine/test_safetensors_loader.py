"""Safetensors loader: every layout matches transformers; every broken checkpoint says why."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from _hf_checkpoints import ARCHS, make_hf_model, save_hf, to_chatglm_layout

from glm_agent.engine.engine import Engine
from glm_agent.engine.errors import CheckpointError
from glm_agent.engine.loaders import load_safetensors_checkpoint, read_hf_config

pytest.importorskip("transformers")

IDS = [5, 17, 200, 3, 99, 42, 7, 255, 128, 64, 33, 1, 0, 77, 150, 12, 9, 180, 240, 31]


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _engine(folder, **kw):
    config, weights = load_safetensors_checkpoint(folder)
    return Engine.from_weights(config, weights, **kw)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_transformers(arch, tmp_path):
    model = make_hf_model(arch)
    engine = _engine(save_hf(model, tmp_path / arch))
    ref = _hf_logits(model, IDS)
    got = engine.forward_logits(IDS)
    assert ref.abs().max() > 1.0  # logits big enough for 1e-4 to mean something
    assert (got - ref).abs().max().item() < 1e-4


def test_config_translation(tmp_path):
    cfg = read_hf_config(save_hf(make_hf_model("glm"), tmp_path / "glm"))
    assert (cfg.arch, cfg.rope_style, cfg.rotary_dim, cfg.qkv_bias) == ("glm4", "interleaved", 8, True)
    assert (cfg.num_kv_heads, cfg.head_dim, cfg.rope_theta, cfg.eos_token_ids) == (2, 16, 10000.0, [1])
    cfg = read_hf_config(save_hf(make_hf_model("glm4"), tmp_path / "glm4"))
    assert cfg.arch == "glm4_0414" and cfg.sandwich_norms and cfg.rope_theta == 20000.0
    cfg = read_hf_config(save_hf(make_hf_model("qwen2"), tmp_path / "qwen2"))
    assert (cfg.arch, cfg.rope_style, cfg.rotary_dim, cfg.qkv_bias) == ("qwen2", "neox", 16, True)
    cfg = read_hf_config(save_hf(make_hf_model("llama"), tmp_path / "llama"))
    assert (cfg.arch, cfg.qkv_bias, cfg.rope_theta) == ("llama", False, 5e5)


def test_tied_embeddings_load(tmp_path):
    model = make_hf_model("qwen2", tie_word_embeddings=True)
    folder = save_hf(model, tmp_path / "tied")
    config, _ = load_safetensors_checkpoint(folder)
    assert config.tie_embeddings
    got = _engine(folder).forward_logits(IDS)
    assert (got - _hf_logits(model, IDS)).abs().max().item() < 1e-4


def test_original_chatglm_layout_matches(tmp_path):
    # rope_ratio 50 -> base 5e5: the ChatGLM config must be read as 10000 * rope_ratio.
    model = make_hf_model("glm", rope_theta=5e5)
    hf = save_hf(model, tmp_path / "hf")
    folder = to_chatglm_layout(hf, tmp_path / "chatglm", rope_ratio=50.0)
    config, _ = load_safetensors_checkpoint(folder)
    assert (config.arch, config.rope_theta, config.rotary_dim) == ("glm4", 5e5, 8)
    assert config.eos_token_ids == [1, 2]
    got = _engine(folder).forward_logits(IDS)
    assert (got - _hf_logits(model, IDS)).abs().max().item() < 1e-4


def test_sharded_checkpoint_loads_lazily(tmp_path, monkeypatch):
    model = make_hf_model("glm4")
    folder = save_hf(model, tmp_path / "sharded", max_shard_size="40KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    import safetensors

    opened = []
    real_open = safetensors.safe_open
    monkeypatch.setattr(safetensors, "safe_open", lambda p, **kw: opened.append(p) or real_open(p, **kw))
    config, weights = load_safetensors_checkpoint(folder)
    assert opened == []  # nothing read before iteration
    next(weights)
    assert len(opened) == 1  # one shard at a time
    names = [name for name, _ in weights]
    assert len(opened) == len(set(index["weight_map"].values()))
    assert len(names) == len(set(names)) and "layers.1.attn.qkv.weight" in names
    got = _engine(folder).forward_logits(IDS)
    assert (got - _hf_logits(model, IDS)).abs().max().item() < 1e-4


def test_bf16_checkpoint_casts_to_requested_dtype(tmp_path):
    model = make_hf_model("qwen2")
    with torch.no_grad():  # round to bf16 in place, keep the float32 RoPE buffers
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    folder = save_hf(copy.deepcopy(model).to(torch.bfloat16), tmp_path / "bf16")
    engine = _engine(folder, dtype=torch.float32)
    assert engine.model.layers[0].attn.qkv.weight.dtype == torch.float32
    ref = _hf_logits(model, IDS)  # same bf16-rounded weights, float32 math
    assert (engine.forward_logits(IDS) - ref).abs().max().item() < 1e-4


# ---- errors -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glm_folder(tmp_path_factory):
    return save_hf(make_hf_model("glm"), tmp_path_factory.mktemp("glm") / "ckpt")


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_missing_folder_and_files(tmp_path, glm_folder):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_hf_config(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_safetensors_checkpoint(tmp_path / "empty")
    folder = _copy(glm_folder, tmp_path / "noweights")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_safetensors_checkpoint(folder)


def test_unknown_architecture_lists_supported(tmp_path, glm_folder):
    folder = _copy(glm_folder, tmp_path / "arch")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="MambaForCausalLM.*supported: .*Glm4ForCausalLM"):
        read_hf_config(folder)


def test_unsupported_rope_scaling(tmp_path, glm_folder):
    folder = _copy(glm_folder, tmp_path / "yarn")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rope_parameters"]["rope_type"] = "yarn"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="'yarn' is not supported"):
        read_hf_config(folder)


def test_shape_mismatch_names_tensor(tmp_path, glm_folder):
    folder = _copy(glm_folder, tmp_path / "shape")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["intermediate_size"] = 96  # checkpoint holds 128
    (folder / "config.json").write_text(json.dumps(cfg))
    config, weights = load_safetensors_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"shape mismatch for model\.layers\.0\.mlp\.down_proj\.weight .*expected \(64, 96\).*got \(64, 128\)"):
        list(weights)


def test_truncated_shard_detected_before_loading(tmp_path, glm_folder):
    folder = _copy(glm_folder, tmp_path / "trunc")
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match="truncated.*re-download"):
        load_safetensors_checkpoint(folder)
    path.write_bytes(data[:5])
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors_checkpoint(folder)


def test_missing_shard_of_index(tmp_path):
    folder = save_hf(make_hf_model("qwen2"), tmp_path / "s", max_shard_size="40KB")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (folder / victim).unlink()
    with pytest.raises(CheckpointError, match=f"missing weights file .*{victim}"):
        load_safetensors_checkpoint(folder)


def test_missing_tensor_reported_by_engine(tmp_path, glm_folder):
    from safetensors.torch import load_file, save_file

    folder = _copy(glm_folder, tmp_path / "missing")
    sd = load_file(folder / "model.safetensors")
    del sd["model.layers.1.mlp.down_proj.weight"]
    save_file(sd, folder / "model.safetensors")
    config, weights = load_safetensors_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"missing 1 tensors: layers\.1\.mlp\.down\.weight"):
        Engine.from_weights(config, weights)


def test_incomplete_fused_parts(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = save_hf(make_hf_model("qwen2"), tmp_path / "parts")
    sd = load_file(folder / "model.safetensors")
    del sd["model.layers.0.self_attn.v_proj.weight"]
    save_file(sd, folder / "model.safetensors")
    config, weights = load_safetensors_checkpoint(folder)
    with pytest.raises(CheckpointError, match=r"layers\.0\.attn\.qkv\.weight has only the parts \['k', 'q'\]"):
        list(weights)


def test_unexpected_tensor(tmp_path, glm_folder):
    from safetensors.torch import load_file, save_file

    folder = _copy(glm_folder, tmp_path / "extra")
    sd = load_file(folder / "model.safetensors")
    sd["model.layers.0.self_attn.mystery.weight"] = torch.zeros(2)
    save_file(sd, folder / "model.safetensors")
    config, weights = load_safetensors_checkpoint(folder)
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.0.self_attn.mystery.weight'"):
        list(weights)
