"""Write tiny transformers models as GGUF files, laid out exactly as llama.cpp's converter does.

- llama: Q/K rows permuted (`convert_hf_to_gguf.LlamaModel.permute`), separate q/k/v, gate/up.
- qwen2: unpermuted, q/k/v biases.
- glm (GlmForCausalLM) -> GGUF arch "chatglm": fused attn_qkv (+bias), fused ffn_up = [gate|up].
- glm4 (Glm4ForCausalLM, 0414) -> GGUF arch "glm4": separate q/k/v, fused ffn_up, sandwich
  norms as post_attention_norm / post_ffw_norm (ffn_norm is the pre-MLP norm).

The vocabulary is the 256 byte-level symbols (SMALL's vocab_size is 256), so the files also
open with `open_checkpoint` and get a working tokenizer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["GGUF_ARCH", "write_gguf", "llama_permute", "byte_level_tokens"]

GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "glm": "chatglm", "glm4": "glm4"}


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp convert_hf_to_gguf.py `LlamaModel.permute` (HF halves -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def byte_level_tokens() -> list[str]:
    """The GPT-2 bytes_to_unicode alphabet, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_gguf(model, path: Path, arch: str, qtype=None, chat_template: str | None = None,
               gguf_arch: str | None = None) -> Path:
    """Save a transformers model (`make_hf_model(arch)`) as a GGUF file."""
    import gguf

    cfg = model.config
    gg = gguf_arch or GGUF_ARCH[arch]
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    rope = getattr(cfg, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
    partial = rope.get("partial_rotary_factor", getattr(cfg, "partial_rotary_factor", 1.0))

    w = gguf.GGUFWriter(str(path), gg)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(hd)
    w.add_value_length(hd)
    w.add_rope_freq_base(float(theta))
    w.add_rope_dimension_count(int(hd * partial))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(byte_level_tokens())
    w.add_token_types([1] * 256)
    w.add_token_merges([])
    w.add_eos_token_id(1)
    if chat_template:
        w.add_chat_template(chat_template)

    def put(name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if qtype is not None and arr.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)
        else:
            w.add_tensor(name, arr)

    put("token_embd.weight", sd.pop("model.embed_tokens.weight"))
    for i in range(cfg.num_hidden_layers):
        h, b = f"model.layers.{i}.", f"blk.{i}."
        put(b + "attn_norm.weight", sd.pop(h + "input_layernorm.weight"))
        q, k, v = (sd.pop(h + f"self_attn.{p}_proj.weight") for p in "qkv")
        if gg == "llama":
            q, k = llama_permute(q, heads), llama_permute(k, kv)
        biases = [sd.pop(h + f"self_attn.{p}_proj.bias", None) for p in "qkv"]
        if gg == "chatglm":
            put(b + "attn_qkv.weight", np.concatenate([q, k, v]))
            if biases[0] is not None:
                put(b + "attn_qkv.bias", np.concatenate(biases))
        else:
            for p, t in zip("qkv", (q, k, v)):
                put(b + f"attn_{p}.weight", t)
            if biases[0] is not None:
                for p, t in zip("qkv", biases):
                    put(b + f"attn_{p}.bias", t)
        put(b + "attn_output.weight", sd.pop(h + "self_attn.o_proj.weight"))
        if arch == "glm4":
            put(b + "post_attention_norm.weight", sd.pop(h + "post_self_attn_layernorm.weight"))
            put(b + "post_ffw_norm.weight", sd.pop(h + "post_mlp_layernorm.weight"))
        put(b + "ffn_norm.weight", sd.pop(h + "post_attention_layernorm.weight"))
        if h + "mlp.gate_up_proj.weight" in sd:
            put(b + "ffn_up.weight", sd.pop(h + "mlp.gate_up_proj.weight"))
        else:
            put(b + "ffn_gate.weight", sd.pop(h + "mlp.gate_proj.weight"))
            put(b + "ffn_up.weight", sd.pop(h + "mlp.up_proj.weight"))
        put(b + "ffn_down.weight", sd.pop(h + "mlp.down_proj.weight"))
    put("output_norm.weight", sd.pop("model.norm.weight"))
    lm = sd.pop("lm_head.weight", None)
    if lm is not None and not cfg.tie_word_embeddings:
        put("output.weight", lm)
    assert not sd, f"unconverted tensors: {list(sd)}"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
