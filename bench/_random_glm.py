"""GLM-4-9B shapes and a random-weight decoder built in place, shared by the GPU benchmarks.

Random weights are enough to time decoding: the work per token depends only on the shapes.
"""

from __future__ import annotations

__all__ = ["GLM4_9B", "SMALL", "random_decoder"]

# THUDM/glm-4-9b-chat's config.json.
GLM4_9B = dict(
    arch="glm4", vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_layers=40,
    num_heads=32, num_kv_heads=2, head_dim=128, rope_theta=5e6, rms_norm_eps=1.5625e-7,
    max_position=131072, partial_rotary_factor=0.5, rope_style="interleaved", qkv_bias=True,
)
# The same family shrunk so the scripts run on a CPU (`--small`).
SMALL = dict(GLM4_9B, vocab_size=2048, hidden_size=256, intermediate_size=512, num_layers=4,
             num_heads=8, num_kv_heads=2, head_dim=32)


def random_decoder(cfg_kw: dict, dtype, dev, quant=None, **config_extra):
    """(config, Decoder) with random weights, built layer by layer on `dev` and quantized as it
    goes, so a 9B model never exists twice in memory."""
    import torch

    from glm_agent.engine.config import ModelConfig
    from glm_agent.engine.decoder import Decoder

    config = ModelConfig(**cfg_kw, **config_extra)
    with torch.device("meta"):
        model = Decoder(config).to(dtype)
    gen = torch.Generator(device=dev).manual_seed(0)

    def fill(mod):
        mod.to_empty(device=dev)
        with torch.no_grad():
            for name, p in mod.named_parameters():
                if p.dim() == 1 and not name.endswith("bias"):
                    p.fill_(1.0)  # RMSNorm scales
                else:
                    p.normal_(0, 0.02, generator=gen)  # random data: zeros would hide bugs and run faster

    if quant is not None:
        from glm_agent.engine.quant import quantize_linears
    for name in ("embed", "norm", "lm_head"):
        fill(getattr(model, name))
    for layer in model.layers:
        fill(layer)
        if quant is not None:
            quantize_linears(layer, quant)
    model.eval()
    return config, model
