"""Tiny random transformers checkpoints for parity tests (saved with `save_pretrained`).

Weights are re-drawn with larger scales than transformers' init (std 0.02 gives near-zero
logits, which would let a wrong implementation pass a 1e-4 check).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

__all__ = ["ARCHS", "make_hf_model", "save_hf", "to_chatglm_layout", "SMALL"]

SMALL = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    pad_token_id=0,
    eos_token_id=1,
    max_position_embeddings=512,
)

ARCHS = ["glm", "glm4", "qwen2", "llama"]


def make_hf_model(arch: str, seed: int = 0, **overrides):
    import transformers as tf

    cls = {
        "glm": (tf.GlmConfig, tf.GlmForCausalLM),
        "glm4": (tf.Glm4Config, tf.Glm4ForCausalLM),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
    }[arch]
    kw = dict(SMALL)
    # Distinct RoPE bases per family so a base read from the wrong key shows up.
    kw["rope_theta"] = {"glm": 10000.0, "glm4": 20000.0, "qwen2": 1e6, "llama": 5e5}[arch]
    kw.update(overrides)
    torch.manual_seed(seed)
    model = cls[1](cls[0](**kw)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif "embed" in name:
                p.normal_(0, 1)
            else:
                p.normal_(0, 0.15)
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens
    return model


def save_hf(model, folder: Path, **kw) -> Path:
    model.save_pretrained(folder, **kw)
    return folder


def to_chatglm_layout(hf_folder: Path, out: Path, rope_ratio: float = 1.0) -> Path:
    """Rewrite a saved `GlmForCausalLM` folder in THUDM's original ChatGLM layout."""
    from safetensors.torch import load_file, save_file

    cfg = json.loads((hf_folder / "config.json").read_text())
    rope = cfg.get("rope_parameters") or {}
    theta = rope.get("rope_theta", cfg.get("rope_theta"))
    assert theta == 10000.0 * rope_ratio, "pick rope_ratio so the bases agree"
    sd = load_file(hf_folder / "model.safetensors")
    new = {
        "transformer.embedding.word_embeddings.weight": sd.pop("model.embed_tokens.weight"),
        "transformer.encoder.final_layernorm.weight": sd.pop("model.norm.weight"),
        "transformer.output_layer.weight": sd.pop("lm_head.weight"),
    }
    for i in range(cfg["num_hidden_layers"]):
        h, t = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        new[t + "input_layernorm.weight"] = sd.pop(h + "input_layernorm.weight")
        new[t + "post_attention_layernorm.weight"] = sd.pop(h + "post_attention_layernorm.weight")
        for kind in ("weight", "bias"):
            new[t + f"self_attention.query_key_value.{kind}"] = torch.cat(
                [sd.pop(h + f"self_attn.{p}_proj.{kind}") for p in "qkv"]
            )
        new[t + "self_attention.dense.weight"] = sd.pop(h + "self_attn.o_proj.weight")
        new[t + "mlp.dense_h_to_4h.weight"] = sd.pop(h + "mlp.gate_up_proj.weight")
        new[t + "mlp.dense_4h_to_h.weight"] = sd.pop(h + "mlp.down_proj.weight")
    new["transformer.rotary_pos_emb.inv_freq"] = torch.zeros(4)  # dropped by the loader
    assert not sd, f"unconverted tensors: {list(sd)}"
    out.mkdir(parents=True, exist_ok=True)
    save_file(new, out / "model.safetensors")
    chatglm = {
        "architectures": ["ChatGLMModel"],
        "model_type": "chatglm",
        "hidden_size": cfg["hidden_size"],
        "num_layers": cfg["num_hidden_layers"],
        "num_attention_heads": cfg["num_attention_heads"],
        "kv_channels": cfg["head_dim"],
        "multi_query_attention": True,
        "multi_query_group_num": cfg["num_key_value_heads"],
        "ffn_hidden_size": cfg["intermediate_size"],
        "padded_vocab_size": cfg["vocab_size"],
        "vocab_size": cfg["vocab_size"],
        "seq_length": cfg["max_position_embeddings"],
        "rope_ratio": rope_ratio,
        "original_rope": True,
        "add_qkv_bias": True,
        "add_bias_linear": False,
        "layernorm_epsilon": cfg["rms_norm_eps"],
        "rmsnorm": True,
        "post_layer_norm": True,
        "apply_residual_connection_post_layernorm": False,
        "tie_word_embeddings": False,
        "eos_token_id": [1, 2],
        "pad_token_id": 0,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(chatglm))
    return out
