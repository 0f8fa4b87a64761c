"""GPU decode speed of our engine (bf16 / int8 / int4) against the memory-bandwidth roofline and
transformers' `GlmForCausalLM` eager generate, on GLM-4-9B shapes with random weights.

    python bench/gpu_decode.py                 # needs CUDA: full GLM-4-9B shapes (~19 GB bf16)
    python bench/gpu_decode.py --small         # tiny config; runs on CPU too (checks the script)
    python bench/gpu_decode.py --weights int4 --batches 1 --no-hf

What it prints (one run, one device):
- copy bandwidth: a device-to-device copy, bytes read + written / time (the roofline's ceiling);
- per weights/mode/batch: decode tokens/s; roofline tokens/s = batch * bandwidth / (weight bytes
  read per step + KV bytes read at the mean context); % of roofline; speed-up over HF eager;
  peak memory; prefill tokens/s for a `--prompt-len` prompt (2k);
- HF `GlmForCausalLM.generate` (bf16, eager PyTorch, no compile) decode tokens/s at batch 1.

Our engine is timed as users get it: `Engine` over the paged KV cache. Modes: "graph" = decode
steps replayed as captured CUDA graphs (`glm_agent/engine/cuda_graphs.py`, the default on CUDA);
"eager" = `cuda_graphs=False` (and CPU, --small). Every configuration runs in its own try/except:
a failure prints an error row and the table goes on.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _random_glm import GLM4_9B, SMALL, random_decoder  # noqa: E402  (bench/ is on sys.path)

QUANTS = {"bf16": None, "int8": {"bits": 8}, "int4": {"bits": 4, "group_size": 128}}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny config (runs on CPU: exercises the script)")
    p.add_argument("--weights", default="bf16,int8,int4")
    p.add_argument("--modes", default=None, help="comma list of graph,eager (default: graph; CPU: eager)")
    p.add_argument("--batches", default="1,4,16")
    p.add_argument("--new-tokens", type=int, default=128, help="decode steps timed per configuration")
    p.add_argument("--prompt-len", type=int, default=2048, help="prefill benchmark length")
    p.add_argument("--context", type=int, default=512, help="prompt length before the timed decode")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers baseline")
    p.add_argument("--hf-tokens", type=int, default=32)
    return p.parse_args()


# ---------------------------------------------------------------------------- helpers


def sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def copy_bandwidth(dev) -> float:
    """Bytes/s of a large device-to-device copy, counting read + write (median of 20)."""
    import torch

    n = (1 << 30) if dev.type == "cuda" else (256 << 20)
    src = torch.randn(n // 4, device=dev)  # random data: zeros can run faster than real data
    dst = torch.empty_like(src)
    times = []
    for i in range(25):
        sync(dev)
        t = time.perf_counter()
        dst.copy_(src)
        sync(dev)
        if i >= 5:
            times.append(time.perf_counter() - t)
    del src, dst
    return 2 * n / statistics.median(times)


def build_model(cfg_kw: dict, quant, dev, dtype):
    """The engine's Decoder with random weights, built layer by layer on `dev`, quantized as it goes."""
    return random_decoder(cfg_kw, dtype, dev, quant)


def weight_bytes_per_step(model) -> int:
    """Bytes of weights one decode step reads (every linear + norms + one embedding row per token)."""
    from torch import nn

    from glm_agent.engine.quant import QuantLinear

    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight_bytes()
        elif isinstance(m, nn.Linear):
            total += sum(p.numel() * p.element_size() for p in m.parameters())
        elif m.__class__.__name__ == "RMSNorm":
            total += m.weight.numel() * m.weight.element_size()
    emb = model.embed.weight
    return total + emb.shape[1] * emb.element_size()


def kv_bytes_per_token(config, dtype_size: int = 2) -> int:
    return config.num_layers * 2 * config.num_kv_heads * config.head_dim * dtype_size


def peak_mem(dev) -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else float("nan")


def reset_mem(dev):
    import torch

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# ---------------------------------------------------------------------------- our engine


def run_ours(args, cfg_kw, wname, mode, batches, dev, bw, rows):
    import torch

    from glm_agent.engine.engine import Engine

    dtype = torch.bfloat16
    reset_mem(dev)
    config, model = build_model(cfg_kw, QUANTS[wname], dev, dtype)
    wbytes = weight_bytes_per_step(model)
    kvtok = kv_bytes_per_token(config)
    g = torch.Generator().manual_seed(1)
    n_new = args.new_tokens
    # The engine every user gets: the paged KV cache; on CUDA, decode steps replay captured graphs.
    ctx = max(args.context + n_new + 8, args.prompt_len) + 8
    engine = Engine(model, config, device=dev, dtype=dtype, max_context=ctx, cache_tokens=max(batches) * ctx,
                    cuda_graphs=mode == "graph")
    for b in batches:
        label = f"ours {wname}"
        try:
            prompts = [torch.randint(0, config.vocab_size, (args.context,), generator=g).tolist() for _ in range(b)]
            streams = [engine.new_stream() for _ in prompts]
            nxt = [int(engine.prefill(s, p).argmax()) for s, p in zip(streams, prompts)]
            for _ in range(3):  # warm-up: capture this bucket's graph, pack kernels
                nxt = engine.decode_step(streams, nxt).argmax(-1).tolist()
            sync(dev)
            t = time.perf_counter()
            for _ in range(n_new):
                nxt = engine.decode_step(streams, nxt).argmax(-1).tolist()  # host sync per token, as real generation
            sync(dev)
            dt = time.perf_counter() - t
            for s in streams:
                engine.free(s)
            tok_s = b * n_new / dt
            mean_ctx = args.context + n_new / 2
            roof = b * bw / (wbytes + b * kvtok * mean_ctx)
            rows.append(dict(engine=label, mode=mode, batch=b, tok_s=tok_s, roof=roof, peak=peak_mem(dev),
                             wgb=wbytes / 1e9))
        except Exception as e:  # one failing configuration must not hide the others
            rows.append(dict(engine=label, mode=mode, batch=b, error=f"{type(e).__name__}: {e}"[:160]))
            for s in list(engine.cache.live_streams):
                engine.free(s)
    prefill = None
    try:
        ids = torch.randint(0, config.vocab_size, (args.prompt_len,), generator=g).tolist()
        times = []
        for _ in range(4):  # the first is a warm-up
            s = engine.new_stream()
            sync(dev)
            t = time.perf_counter()
            engine.prefill(s, ids)
            sync(dev)
            times.append(time.perf_counter() - t)
            engine.free(s)
        engine.cache.block_manager.clear_prefix_cache()
        prefill = args.prompt_len / min(times[1:])
    except Exception as e:
        prefill = f"{type(e).__name__}: {e}"[:120]
    del model, engine
    reset_mem(dev)
    return prefill


# ---------------------------------------------------------------------------- transformers


def run_hf_config(cfg_kw, max_positions, dev):
    """transformers' GlmForCausalLM in bf16 with eager attention, random weights, on `dev`."""
    import torch
    from transformers import GlmConfig, GlmForCausalLM

    reset_mem(dev)
    hf_cfg = GlmConfig(
        vocab_size=cfg_kw["vocab_size"], hidden_size=cfg_kw["hidden_size"],
        intermediate_size=cfg_kw["intermediate_size"], num_hidden_layers=cfg_kw["num_layers"],
        num_attention_heads=cfg_kw["num_heads"], num_key_value_heads=cfg_kw["num_kv_heads"],
        head_dim=cfg_kw["head_dim"], rms_norm_eps=cfg_kw["rms_norm_eps"], attention_bias=True,
        max_position_embeddings=max_positions, tie_word_embeddings=False,
        rope_parameters={"rope_theta": cfg_kw["rope_theta"], "partial_rotary_factor": 0.5, "rope_type": "default"},
        pad_token_id=0, eos_token_id=None, bos_token_id=None,
    )
    hf_cfg._attn_implementation = "eager"
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(dev):
            return GlmForCausalLM(hf_cfg).eval()
    finally:
        torch.set_default_dtype(old)


def run_hf(args, cfg_kw, dev):
    """HF GlmForCausalLM eager (no compile) bf16 generate at batch 1: decode tokens/s."""
    import torch

    model = run_hf_config(cfg_kw, args.context + args.hf_tokens + 8, dev)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, cfg_kw["vocab_size"], (1, args.context), generator=g).to(dev)

    def gen(n):
        sync(dev)
        t = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        sync(dev)
        assert out.shape[1] == args.context + n
        return time.perf_counter() - t

    gen(2)  # warm-up
    t1 = min(gen(1) for _ in range(2))
    tn = gen(args.hf_tokens)
    tok_s = (args.hf_tokens - 1) / (tn - t1)  # decode only: the first token pays the prefill
    peak = peak_mem(dev)
    model = None  # free it before measuring the next configuration (gen() holds the name)
    reset_mem(dev)
    return tok_s, peak


# ---------------------------------------------------------------------------- main


def _gib(x: float) -> str:
    return "-" if x != x else f"{x:.1f}"  # NaN (CPU): no peak-memory counter


def main() -> int:
    args = parse_args()
    import torch

    if not args.small and not torch.cuda.is_available():
        print("gpu_decode.py: no CUDA device found. This benchmark needs an NVIDIA GPU "
              "(H100/H200 class for the GLM-4-9B shapes). Run `python bench/gpu_decode.py --small` "
              "to exercise the script on CPU.", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg_kw = SMALL if args.small else GLM4_9B
    if args.small:
        args.prompt_len = min(args.prompt_len, 256)
        args.context = min(args.context, 64)
        args.new_tokens = min(args.new_tokens, 16)
        args.hf_tokens = min(args.hf_tokens, 8)
    batches = [int(b) for b in args.batches.split(",")]
    weights = args.weights.split(",")
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; config: {'small' if args.small else 'GLM-4-9B'} "
          f"(hidden {cfg_kw['hidden_size']}, {cfg_kw['num_layers']} layers, vocab {cfg_kw['vocab_size']})")
    bw = copy_bandwidth(dev)
    print(f"copy bandwidth (read + write): {bw / 1e9:.0f} GB/s")

    rows: list[dict] = []
    prefill: dict[str, object] = {}
    for w in weights:
        if args.modes:
            modes = args.modes.split(",")
        elif dev.type != "cuda":
            modes = ["eager"]
        else:
            modes = ["graph"]
        for mode in modes:
            if mode == "graph" and dev.type != "cuda":
                continue
            print(f"running ours {w} {mode} ...", flush=True)
            pf = run_ours(args, cfg_kw, w, mode, batches, dev, bw, rows)
            prefill.setdefault(w, pf)

    hf = None
    if not args.no_hf:
        print("running transformers GlmForCausalLM eager bf16 generate ...", flush=True)
        try:
            hf = run_hf(args, cfg_kw, dev)
        except Exception as e:
            print(f"transformers baseline failed: {type(e).__name__}: {e}")

    print()
    print(f"decode, prompt {args.context} tokens then {args.new_tokens} timed steps; roofline = batch x "
          f"{bw / 1e9:.0f} GB/s / (weight bytes + KV bytes at the mean context)")
    head = f"{'engine':<22}{'mode':<9}{'batch':>5}{'tok/s':>10}{'roofline':>10}{'% roof':>8}{'vs HF':>8}{'weights GB':>12}{'peak GiB':>10}"
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:<22}{r['mode']:<9}{r['batch']:>5}  ERROR {r['error']}")
            continue
        vs = f"{r['tok_s'] / hf[0]:.1f}x" if hf and r["batch"] == 1 else "-"
        print(f"{r['engine']:<22}{r['mode']:<9}{r['batch']:>5}{r['tok_s']:>10.1f}{r['roof']:>10.1f}"
              f"{100 * r['tok_s'] / r['roof']:>7.0f}%{vs:>8}{r['wgb']:>12.2f}{_gib(r['peak']):>10}")
    if hf:
        print(f"{'HF GlmForCausalLM':<22}{'eager':<9}{1:>5}{hf[0]:>10.1f}{'':>10}{'':>8}{'1.0x':>8}{'':>12}{_gib(hf[1]):>10}")
    print()
    print(f"prefill, one {args.prompt_len}-token prompt (SDPA causal; quantized layers pick their kernel by rows, "
          f"on CUDA at 2k: dequantize + bf16 GEMM):")
    for w, pf in prefill.items():
        print(f"  {w:<6} {pf:>10.0f} tok/s" if isinstance(pf, float) else f"  {w:<6} ERROR {pf}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
