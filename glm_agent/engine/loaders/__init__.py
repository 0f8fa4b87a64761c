"""Checkpoint loaders: each yields a `ModelConfig` and `(canonical_name, tensor)` pairs."""

from glm_agent.engine.loaders.safetensors import load_safetensors_checkpoint, read_hf_config

__all__ = ["load_safetensors_checkpoint", "read_hf_config"]
