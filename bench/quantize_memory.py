"""Peak CPU memory of `glm-agent model quantize` on GLM-4-9B shapes (synthetic source stream).

    python bench/quantize_memory.py --layers 2        # embeddings + 2 full-size layers (fast)
    python bench/quantize_memory.py                   # all 40 layers: 9.4B parameters

The source yields fp32 tensors one at a time, as the GGUF and safetensors loaders do, so the
peak is set by the largest single tensor (the 151552 x 4096 embedding / output layer, 2.5 GB in
fp32) plus one output shard (2 GiB), not by the model size: the number of layers does not move
it. Prints peak RSS next to the full model's fp32 / bf16 / int4 sizes.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=40)
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--include-lm-head", action="store_true")
    args = p.parse_args()

    import torch

    from glm_agent.engine.config import ModelConfig
    from glm_agent.engine.loaders.quantized import save_quantized_checkpoint
    from glm_agent.engine.loaders.safetensors import expected_shapes

    config = ModelConfig(
        arch="glm4", vocab_size=151552, hidden_size=4096, intermediate_size=13696, num_layers=args.layers,
        num_heads=32, num_kv_heads=2, head_dim=128, rope_theta=5e6, rms_norm_eps=1.5625e-7, max_position=131072,
        partial_rotary_factor=0.5, rope_style="interleaved", qkv_bias=True,
    )
    shapes = expected_shapes(config)
    n_params = sum(torch.Size(s).numel() for s in shapes.values())

    def source():
        g = torch.Generator().manual_seed(0)
        for name, shape in shapes.items():
            yield name, torch.randn(shape, generator=g) * 0.02

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        dst = save_quantized_checkpoint(config, source(), Path(tmp) / "q", {"bits": args.bits, "lm_head": args.include_lm_head})
        size = sum(f.stat().st_size for f in dst.glob("*.safetensors"))
    dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"GLM-4-9B shapes, {args.layers} layers ({n_params / 1e9:.2f}B params), int{args.bits}: "
          f"{dt:.0f}s, output {size / 1e9:.2f} GB")
    print(f"{'':<28}{'GiB':>8}")
    print(f"{'peak RSS (process)':<28}{peak:>8.2f}")
    print(f"{'RSS before quantizing':<28}{base:>8.2f}")
    print(f"{'full 9.4B model fp32':<28}{9.4e9 * 4 / 2**30:>8.2f}")
    print(f"{'full 9.4B model bf16':<28}{9.4e9 * 2 / 2**30:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
