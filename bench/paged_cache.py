"""Paged KV cache costs on this machine: view vs gather reads, batched vs sequential decode.

    python bench/paged_cache.py [--device cpu|cuda] [--layers 8] [--hidden 1536] [--threads 2]

Random weights with Qwen2.5-1.5B-like layer shapes (fewer layers by default). Prints:
1. batch-1 decode ms/token at several context lengths, reading the stream's keys as a slice
   view (consecutive blocks, the normal case) vs through a block-table gather (fragmented pool);
2. B streams decoded as one batched forward vs B separate batch-1 forwards (APAR's win).
"""

from __future__ import annotations

import argparse
import time

import torch

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.engine import Engine
from glm_agent.engine.loaders.safetensors import expected_shapes

__all__ = ["main"]


def _engine(args) -> Engine:
    h = args.hidden
    config = ModelConfig(
        arch="qwen2", vocab_size=32000, hidden_size=h, intermediate_size=int(h * 5.83) // 64 * 64,
        num_layers=args.layers, num_heads=h // 128, num_kv_heads=2, head_dim=128,
        rope_theta=1e6, rms_norm_eps=1e-6, max_position=8192, qkv_bias=True,
    )
    weights = ((n, torch.randn(s) * 0.02) for n, s in expected_shapes(config).items())
    return Engine.from_weights(config, weights, device=args.device, dtype=getattr(torch, args.dtype),
                               max_context=8192, cache_tokens=65536)


def _sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, n):
    fn()
    _sync(device)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    _sync(device)
    return (time.perf_counter() - t) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1536)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    e = _engine(args)
    print(f"device={args.device} dtype={args.dtype} layers={args.layers} hidden={args.hidden} threads={args.threads}")

    print("\n| context | view ms/tok | gather ms/tok | gather/view |")
    print("|---|---|---|---|")
    for ctx in (128, 1024, 4096):
        view = e.new_stream()
        e.prefill(view, [7] * ctx)
        frag, filler = e.new_stream(), e.new_stream()
        for i in range(0, ctx, 16):  # interleave blocks with another stream: no slice view
            e.prefill(frag, [7] * min(16, ctx - i))
            e.prefill(filler, [7] * 16)
        e.free(filler)
        assert not e.cache.is_contiguous(frag)
        tv = _time(lambda v=view: e.decode_step([v], [5]), args.device, args.steps)
        tg = _time(lambda f=frag: e.decode_step([f], [5]), args.device, args.steps)
        print(f"| {ctx} | {tv * 1e3:.2f} | {tg * 1e3:.2f} | {tg / tv:.2f} |")
        e.free(view)
        e.free(frag)

    print("\n| streams | batched ms/step | sequential ms/step | speed-up |")
    print("|---|---|---|---|")
    for b in (1, 4, 8):
        root = e.new_stream()
        e.prefill(root, [7] * 512)
        streams = [root] + [e.fork(root) for _ in range(b - 1)]
        tb = _time(lambda ss=streams: e.decode_step(ss, [5] * len(ss)), args.device, args.steps)
        ts = _time(lambda ss=streams: [e.decode_step([s], [5]) for s in ss], args.device, max(2, args.steps // b))
        print(f"| {b} | {tb * 1e3:.2f} | {ts * 1e3:.2f} | {ts / tb:.2f}x |")
        for s in streams:
            e.free(s)
    print(f"\nblocks in use after the run: {e.cache.num_used_blocks} (must be 0)")


if __name__ == "__main__":
    main()
