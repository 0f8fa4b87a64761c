"""Load HF-style safetensors folders lazily, yielding canonical tensor names.

Supported layouts (`config.json` "architectures"):

    ChatGLMModel / ChatGLMForConditionalGeneration   original THUDM glm-4-9b(-chat) names
                                                     (transformer.encoder.layers.N.self_attention
                                                     .query_key_value, transformer.output_layer, ...)
    GlmForCausalLM                                   glm-4-9b-chat-hf
    Glm4ForCausalLM                                  GLM-4-0414 (sandwich norms)
    Qwen2ForCausalLM                                 Qwen2 / Qwen2.5
    LlamaForCausalLM                                 Llama, SmolLM2, ...

Weights stream shard by shard and tensor by tensor through `safetensors.safe_open`; separate
q/k/v and gate/up projections are fused as their parts arrive (only one layer's parts are
ever buffered), so a 9B checkpoint is never held in memory at once. Every number comes from
the checkpoint's own config (rope_theta *or* 10000·rope_ratio, partial_rotary_factor,
head_dim, KV groups, eos ids from config.json and generation_config.json).

Public API:
    read_hf_config(folder) -> ModelConfig
    load_safetensors_checkpoint(folder) -> (ModelConfig, Iterator[tuple[str, Tensor]])
    expected_shapes(config) -> dict[str, tuple[int, ...]]      canonical names -> shapes
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.errors import CheckpointError

if TYPE_CHECKING:
    import torch

__all__ = ["read_hf_config", "load_safetensors_checkpoint", "expected_shapes", "SUPPORTED_ARCHITECTURES"]

SUPPORTED_ARCHITECTURES = {
    "ChatGLMModel": "chatglm",
    "ChatGLMForConditionalGeneration": "chatglm",
    "GlmForCausalLM": "glm4",
    "Glm4ForCausalLM": "glm4_0414",
    "Qwen2ForCausalLM": "qwen2",
    "LlamaForCausalLM": "llama",
}
_MODEL_TYPES = {"chatglm": "chatglm", "glm": "glm4", "glm4": "glm4_0414", "qwen2": "qwen2", "llama": "llama"}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); re-download the checkpoint") from e


def _folder(folder) -> Path:
    p = Path(folder)
    if not p.is_dir():
        raise CheckpointError(f"checkpoint folder {p} does not exist (or is not a folder)")
    if not (p / "config.json").is_file():
        raise CheckpointError(f"{p} has no config.json; point at a Hugging Face style model folder")
    return p


def _eos_list(value) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in (value if isinstance(value, list) else [value])]


def _rope(cfg: dict) -> tuple[float, float]:
    """(rope_theta, partial_rotary_factor) from transformers 4.x or 5.x config keys."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or {}
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if kind != "default":
        raise CheckpointError(
            f"RoPE scaling type {kind!r} is not supported by this engine (only plain RoPE); "
            "use a checkpoint without rope_scaling or remove it from config.json"
        )
    theta = params.get("rope_theta", cfg.get("rope_theta"))
    if theta is None:
        raise CheckpointError("config.json has no rope_theta (nor rope_parameters.rope_theta)")
    factor = params.get("partial_rotary_factor", cfg.get("partial_rotary_factor"))
    return float(theta), factor


def read_hf_config(folder) -> ModelConfig:
    """Translate a checkpoint's `config.json` into a `ModelConfig`."""
    folder = _folder(folder)
    cfg = _read_json(folder / "config.json")
    archs = cfg.get("architectures") or []
    kind = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
    if kind is None and not archs:
        kind = _MODEL_TYPES.get(cfg.get("model_type", ""))
    if kind is None:
        raise CheckpointError(
            f"unknown architecture {archs or cfg.get('model_type')!r} in {folder / 'config.json'}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    eos = _eos_list(cfg.get("eos_token_id"))
    gen = folder / "generation_config.json"
    if gen.is_file():
        eos += [e for e in _eos_list(_read_json(gen).get("eos_token_id")) if e not in eos]

    if kind == "chatglm":
        if cfg.get("add_bias_linear"):
            raise CheckpointError("ChatGLM checkpoints with add_bias_linear=true are not supported")
        if cfg.get("apply_residual_connection_post_layernorm"):
            raise CheckpointError("ChatGLM apply_residual_connection_post_layernorm=true is not supported")
        if not cfg.get("rmsnorm", True):
            raise CheckpointError("ChatGLM checkpoints with LayerNorm (rmsnorm=false) are not supported")
        heads = cfg["num_attention_heads"]
        head_dim = cfg.get("kv_channels") or cfg["hidden_size"] // heads
        kv_heads = cfg.get("multi_query_group_num", heads) if cfg.get("multi_query_attention") else heads
        return ModelConfig(
            arch="glm4",
            vocab_size=cfg.get("padded_vocab_size") or cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["ffn_hidden_size"],
            num_layers=cfg["num_layers"],
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            # ChatGLM stores a multiplier of the 10000 base (glm-4-9b-chat: 500 -> 5e6).
            rope_theta=10000.0 * float(cfg.get("rope_ratio", 1.0)),
            rms_norm_eps=cfg.get("layernorm_epsilon", 1e-5),
            max_position=cfg.get("seq_length", 8192),
            partial_rotary_factor=0.5,  # ChatGLM rotates the first half of each head
            rope_style="interleaved" if cfg.get("original_rope", True) else "neox",
            qkv_bias=bool(cfg.get("add_qkv_bias", False)),
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos,
            pad_token_id=cfg.get("pad_token_id"),
        )

    theta, factor = _rope(cfg)
    heads = cfg["num_attention_heads"]
    if kind == "llama" and (cfg.get("attention_bias") or cfg.get("mlp_bias")):
        raise CheckpointError("Llama checkpoints with attention_bias/mlp_bias are not supported")
    glm = kind in ("glm4", "glm4_0414")
    return ModelConfig(
        arch=kind,
        vocab_size=cfg["vocab_size"],
        hidden_size=cfg["hidden_size"],
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads,
        head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
        rope_theta=theta,
        rms_norm_eps=cfg["rms_norm_eps"],
        max_position=cfg.get("max_position_embeddings", 4096),
        partial_rotary_factor=float(factor if factor is not None else (0.5 if glm else 1.0)),
        rope_style="interleaved" if glm else "neox",
        qkv_bias=True if kind == "qwen2" else bool(cfg.get("attention_bias", glm)),
        sandwich_norms=kind == "glm4_0414",
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        bos_token_id=cfg.get("bos_token_id"),
        eos_token_ids=eos,
        pad_token_id=cfg.get("pad_token_id"),
    )


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical tensor name -> shape for a float checkpoint of `config`."""
    h, d = config.hidden_size, config.head_dim
    qkv = (config.num_heads + 2 * config.num_kv_heads) * d
    shapes: dict[str, tuple[int, ...]] = {"embed.weight": (config.vocab_size, h), "norm.weight": (h,)}
    if not config.tie_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, h)
    for i in range(config.num_layers):
        p = f"layers.{i}."
        shapes[p + "attn_norm.weight"] = (h,)
        shapes[p + "attn.qkv.weight"] = (qkv, h)
        if config.qkv_bias:
            shapes[p + "attn.qkv.bias"] = (qkv,)
        shapes[p + "attn.o.weight"] = (h, config.num_heads * d)
        shapes[p + "mlp_norm.weight"] = (h,)
        shapes[p + "mlp.gate_up.weight"] = (2 * config.intermediate_size, h)
        shapes[p + "mlp.down.weight"] = (h, config.intermediate_size)
        if config.sandwich_norms:
            shapes[p + "post_attn_norm.weight"] = (h,)
            shapes[p + "post_mlp_norm.weight"] = (h,)
    return shapes


# (regex on the checkpoint name, canonical name template, fused part or None)
_HF_RULES = [
    (r"(?:model\.)?embed_tokens\.weight", "embed.weight", None),
    (r"(?:model\.)?norm\.weight", "norm.weight", None),
    (r"lm_head\.weight", "lm_head.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.input_layernorm\.weight", "layers.{}.attn_norm.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.post_attention_layernorm\.weight", "layers.{}.mlp_norm.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.post_self_attn_layernorm\.weight", "layers.{}.post_attn_norm.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.post_mlp_layernorm\.weight", "layers.{}.post_mlp_norm.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", "layers.{}.attn.qkv.{}", "qkv"),
    (r"(?:model\.)?layers\.(\d+)\.self_attn\.qkv_proj\.(weight|bias)", "layers.{}.attn.qkv.{}", None),
    (r"(?:model\.)?layers\.(\d+)\.self_attn\.o_proj\.weight", "layers.{}.attn.o.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.mlp\.gate_up_proj\.weight", "layers.{}.mlp.gate_up.weight", None),
    (r"(?:model\.)?layers\.(\d+)\.mlp\.(gate|up)_proj\.weight", "layers.{}.mlp.gate_up.weight", "gate_up"),
    (r"(?:model\.)?layers\.(\d+)\.mlp\.down_proj\.weight", "layers.{}.mlp.down.weight", None),
]
_CHATGLM_RULES = [
    (r"transformer\.embedding\.word_embeddings\.weight", "embed.weight", None),
    (r"transformer\.encoder\.final_layernorm\.weight", "norm.weight", None),
    (r"transformer\.output_layer\.weight", "lm_head.weight", None),
    (r"transformer\.encoder\.layers\.(\d+)\.input_layernorm\.weight", "layers.{}.attn_norm.weight", None),
    (r"transformer\.encoder\.layers\.(\d+)\.post_attention_layernorm\.weight", "layers.{}.mlp_norm.weight", None),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attention\.query_key_value\.(weight|bias)", "layers.{}.attn.qkv.{}", None),
    (r"transformer\.encoder\.layers\.(\d+)\.self_attention\.dense\.weight", "layers.{}.attn.o.weight", None),
    (r"transformer\.encoder\.layers\.(\d+)\.mlp\.dense_h_to_4h\.weight", "layers.{}.mlp.gate_up.weight", None),
    (r"transformer\.encoder\.layers\.(\d+)\.mlp\.dense_4h_to_h\.weight", "layers.{}.mlp.down.weight", None),
]
_SKIP = re.compile(r".*(rotary_emb|rotary_pos_emb)\.inv_freq$")
_FUSE_ORDER = {"qkv": ("q", "k", "v"), "gate_up": ("gate", "up")}


def _compile(rules):
    return [(re.compile(pat + r"$"), tpl, fuse) for pat, tpl, fuse in rules]


_HF = _compile(_HF_RULES)
_CHATGLM = _compile(_CHATGLM_RULES)


def _check_shard(path: Path) -> list[str]:
    """Validate a shard's header against its size (catches truncated downloads); its names."""
    if not path.is_file():
        raise CheckpointError(f"missing weights file {path}; re-download the checkpoint")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path} is truncated ({size} bytes): no safetensors header")
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            raise CheckpointError(
                f"{path} is truncated: its header needs {8 + n} bytes but the file has {size}; "
                "re-download it"
            )
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path} has a corrupt safetensors header ({e}); re-download it") from e
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: its header describes {8 + n + end} bytes but the file has "
            f"{size}; re-download it"
        )
    # Layer by layer (natural order), so fused parts of one layer arrive together.
    return sorted((k for k in header if k != "__metadata__"), key=_natural)


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _shards(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        files = list(dict.fromkeys(weight_map.values()))
        if not files:
            raise CheckpointError(f"{index} lists no weights")
        return [folder / f for f in files]
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    raise CheckpointError(
        f"no model.safetensors (or model.safetensors.index.json) in {folder}; "
        "only safetensors checkpoints are loaded from folders (GGUF: pass the .gguf file)"
    )


def load_safetensors_checkpoint(folder) -> tuple[ModelConfig, Iterator[tuple[str, "torch.Tensor"]]]:
    """Config plus a lazy iterator of `(canonical_name, tensor)` in checkpoint order.

    All shards are checked (present, not truncated) before the first tensor is read.
    """
    folder = _folder(folder)
    config = read_hf_config(folder)
    shards = _shards(folder)
    names = {p: _check_shard(p) for p in shards}
    chatglm = any(n.startswith("transformer.") for ns in names.values() for n in ns)
    rules = _CHATGLM if chatglm else _HF
    return config, _iterate(config, shards, names, rules)


def _iterate(config: ModelConfig, shards, names, rules) -> Iterator[tuple[str, "torch.Tensor"]]:
    import torch
    from safetensors import safe_open

    shapes = expected_shapes(config)
    d = config.head_dim
    part_rows = {
        "q": config.num_heads * d,
        "k": config.num_kv_heads * d,
        "v": config.num_kv_heads * d,
        "gate": config.intermediate_size,
        "up": config.intermediate_size,
    }
    pending: dict[str, dict[str, object]] = {}  # canonical name -> part -> tensor

    def checked(name: str, source: str, t):
        want = shapes.get(name)
        if want is not None and tuple(t.shape) != want:
            raise CheckpointError(
                f"shape mismatch for {source} (-> {name}): expected {want} from config.json, "
                f"got {tuple(t.shape)}"
            )
        return name, t

    for path in shards:
        try:
            handle = safe_open(str(path), framework="pt")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {path}: {e}; re-download it") from e
        with handle as f:
            for source in names[path]:
                if _SKIP.match(source):
                    continue
                for rule in rules:
                    m = rule[0].match(source)
                    if m:
                        _, tpl, fuse = rule
                        break
                else:
                    raise CheckpointError(
                        f"unexpected tensor {source!r} in {path.name} for a {config.arch} checkpoint"
                    )
                groups = m.groups()
                t = f.get_tensor(source)
                if fuse is None:
                    yield checked(tpl.format(*groups), source, t)
                    continue
                layer, part = groups[0], groups[1]
                name = tpl.format(layer, *groups[2:])
                rows = part_rows[part]
                if t.shape[0] != rows or (t.dim() == 2 and t.shape[1] != config.hidden_size):
                    want = (rows, config.hidden_size) if t.dim() == 2 else (rows,)
                    raise CheckpointError(
                        f"shape mismatch for {source}: expected {want} from config.json, "
                        f"got {tuple(t.shape)}"
                    )
                parts = pending.setdefault(name, {})
                parts[part] = t
                order = _FUSE_ORDER[fuse]
                if all(p in parts for p in order):
                    del pending[name]
                    yield checked(name, source, torch.cat([parts[p] for p in order], dim=0))
    if pending:
        name, parts = next(iter(pending.items()))
        raise CheckpointError(
            f"checkpoint is incomplete: {name} has only the parts {sorted(parts)} "
            f"({len(pending)} fused tensors incomplete)"
        )
