"""APAR vs sequential decoding of a structured answer: wall time, tokens/s, KV-cache memory.

    python bench/apar.py                  # needs CUDA: GLM-4-9B shapes, random weights, bf16 + int4
    python bench/apar.py --small          # tiny GLM config; runs on CPU (this machine)
    python bench/apar.py --items 4,8,16 --detail 64 --head 8 --weights bf16,int4

The answer is a list of k items: per item the root stream writes a head of `--head` tokens and
`[Fork]`; the item's child writes `[Child]` + `--detail` tokens + EOS; the root ends with EOS.
A random model has never been APAR-tuned, so `ForcedSchedule.structured` forces the forks and
the ends (the model's own sampling fills everything else). "sequential" decodes the same
number of tokens as one stream with `Engine.generate` (the normal path: batch 1, one token per
forward); "APAR" decodes the tree with `AparDecoder` (every live stream in one batched forward).
Both use the same engine and paged KV cache. KV MiB = cache blocks in use at the peak
(sequential: the whole answer in one stream; APAR: prompt + root + the live children's own
blocks, finished children freed at once).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

__all__ = ["main"]

from _random_glm import GLM4_9B, SMALL, random_decoder  # noqa: E402  (bench/ is on sys.path)

QUANTS = {"bf16": None, "fp32": None, "int8": {"bits": 8}, "int4": {"bits": 4, "group_size": 128}}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny GLM config (runs on CPU)")
    p.add_argument("--weights", default=None,
                   help="comma list of bf16,fp32,int8,int4 (default: bf16,int4 on GPU, fp32,int4 with --small)")
    p.add_argument("--items", default="4,8,16", help="k values: items per answer")
    p.add_argument("--detail", type=int, default=64, help="L: tokens per item's details")
    p.add_argument("--head", type=int, default=8, help="tokens of each item's head (root stream)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (default 1 on CPU: on a shared 2-core machine two threads "
                        "straggle and time 10-20x worse and far noisier)")
    p.add_argument("--repeat", type=int, default=None,
                   help="runs per configuration, the fastest is reported (default: 3 on CPU, 2 on GPU)")
    return p.parse_args()


def sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def build_engine(cfg_kw: dict, weights: str, dev, max_context: int, cache_tokens: int):
    """An Engine around a random-weight Decoder built in place on `dev` (no checkpoint)."""
    import torch

    from glm_agent.engine.engine import Engine

    dtype = torch.float32 if weights == "fp32" else torch.bfloat16
    config, model = random_decoder(cfg_kw, dtype, dev, QUANTS[weights], eos_token_ids=[cfg_kw["vocab_size"] - 3])
    return Engine(model, config, device=dev, dtype=dtype, max_context=max_context, cache_tokens=cache_tokens)


def run_sequential(engine, prompt, n_tokens, dev):
    sync(dev)
    t = time.perf_counter()
    kv = 0
    count = 0
    for _ in engine.generate(prompt, n_tokens, stop_token_ids=()):  # greedy
        count += 1
        if count == n_tokens:  # the stream is still allocated: its blocks are the peak
            kv = engine.cache.memory_bytes()
    sync(dev)
    return time.perf_counter() - t, count, kv, n_tokens - 1


def run_apar(engine, prompt, k, detail, head, dev):
    from glm_agent.engine.apar import AparDecoder, AparTokens, ForcedSchedule

    v = engine.vocab_size
    tokens = AparTokens(fork_id=v - 2, child_id=v - 1)
    sched = ForcedSchedule.structured(k, detail, head_tokens=head)
    total = ForcedSchedule.total_tokens(k, detail, head)
    dec = AparDecoder(engine, tokens, max_streams=max(32, k + 1), schedule=sched)
    sync(dev)
    t = time.perf_counter()
    for _ in dec.generate(prompt, total, stop_token_ids={v - 3}):  # greedy
        pass
    sync(dev)
    dt = time.perf_counter() - t
    st = dec.stats
    assert st.tokens == total and st.forks == k and engine.cache.num_used_blocks == 0, st
    return dt, st.tokens, st.peak_kv_bytes, st.steps


def main() -> int:
    args = parse_args()
    import torch

    if not args.small and not torch.cuda.is_available():
        print("bench/apar.py: no CUDA device found. The GLM-4-9B shapes need an NVIDIA GPU "
              "(about 19 GB in bf16). Run `python bench/apar.py --small` for the CPU table.",
              file=sys.stderr)
        return 2
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    threads = args.threads or (1 if dev.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    cfg_kw = SMALL if args.small else GLM4_9B
    items = [int(x) for x in args.items.split(",")]
    repeat = args.repeat or (2 if dev.type == "cuda" else 3)
    from glm_agent.engine.apar import ForcedSchedule

    longest = max(ForcedSchedule.total_tokens(k, args.detail, args.head) for k in items)
    max_context = args.prompt + longest + 16
    name = torch.cuda.get_device_name() if dev.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; config: {'small' if args.small else 'GLM-4-9B'} "
          f"(hidden {cfg_kw['hidden_size']}, {cfg_kw['num_layers']} layers, vocab {cfg_kw['vocab_size']}); "
          f"answer: k items x (head {args.head} + detail {args.detail}) tokens; prompt {args.prompt}; "
          f"best of {repeat} runs")
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, cfg_kw["vocab_size"] - 3, (args.prompt,), generator=g).tolist()

    rows = []
    for w in (args.weights or ("fp32,int4" if args.small else "bf16,int4")).split(","):
        print(f"running {w} ...", flush=True)
        try:
            engine = build_engine(cfg_kw, w, dev, max_context, cache_tokens=4 * max_context)
            run_sequential(engine, prompt, 8, dev)  # warm-up: kernels, packing, allocator
            run_apar(engine, prompt, 2, 4, 2, dev)
            for k in items:
                n = ForcedSchedule.total_tokens(k, args.detail, args.head)
                seqs, pars = [], []
                for _ in range(repeat):  # interleaved, so both see the same machine load
                    seqs.append(run_sequential(engine, prompt, n, dev))
                    pars.append(run_apar(engine, prompt, k, args.detail, args.head, dev))
                rows.append((w, k, min(seqs), min(pars)))
            del engine
        except Exception as e:  # one failing configuration must not hide the others
            rows.append((w, None, f"{type(e).__name__}: {e}"[:200], None))
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    mib = 2**20
    print()
    head = (f"{'weights':<8}{'k':>4}{'tokens':>8}{'seq s':>9}{'seq tok/s':>11}{'APAR s':>9}{'APAR tok/s':>12}"
            f"{'speed-up':>10}{'steps seq/APAR':>16}{'KV MiB seq':>12}{'KV MiB APAR':>13}{'KV APAR/seq':>13}")
    print(head)
    print("-" * len(head))
    for w, k, seq, par in rows:
        if k is None:
            print(f"{w:<8}  ERROR {seq}")
            continue
        (ts, ns, kvs, ss), (tp, np_, kvp, sp) = seq, par
        print(f"{w:<8}{k:>4}{ns:>8}{ts:>9.2f}{ns / ts:>11.1f}{tp:>9.2f}{np_ / tp:>12.1f}{ts / tp:>9.2f}x"
              f"{f'{ss}/{sp}':>16}{kvs / mib:>12.2f}{kvp / mib:>13.2f}{kvp / kvs:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
