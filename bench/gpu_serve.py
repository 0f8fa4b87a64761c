"""Serving on the GPU: N concurrent clients on one `Scheduler` (what `glm-agent serve` runs), with
decode steps as captured CUDA graphs and eagerly, next to transformers' `GlmForCausalLM` eager
`generate` on the same card in the same run, on GLM-4-9B shapes with random weights.

    python bench/gpu_serve.py                   # needs CUDA (~19 GB bf16)
    python bench/gpu_serve.py --small           # tiny config; runs on CPU too (checks the script)

Each of N clients sends `--rounds` requests back to back. A prompt is a `--shared`-token prefix
common to every request (a system prompt with tool schemas) plus `--own` tokens of its own; each
request decodes `--new-tokens` tokens (greedy, no stop). Printed per engine and N: aggregate
decode tok/s, its ratio to the same engine's single client, p50/p95 time to first token and
request latency, and prompt tokens served from the prefix cache. transformers has no scheduler:
its row runs the N prompts as one static batch (`generate` on an [N, prompt] tensor), which is
the most it can do for N simultaneous users; its time to first token is a 1-token `generate`.
HTTP is left out on purpose: the served model needs a tokenizer and weights this bench does not
have; `bench/serve.py` times the HTTP server on CPU with real models.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _random_glm import GLM4_9B, SMALL, random_decoder  # noqa: E402  (bench/ is on sys.path)
from gpu_decode import QUANTS, reset_mem, run_hf_config, sync  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="tiny config (runs on CPU: exercises the script)")
    p.add_argument("--weights", default="bf16")
    p.add_argument("--clients", default="1,4,16,32")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--shared", type=int, default=384, help="prompt tokens common to every request")
    p.add_argument("--own", type=int, default=128, help="prompt tokens of each request's own")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--modes", default=None, help="graph,eager (default: both on CUDA; eager on CPU)")
    p.add_argument("--hf-clients", default="1,16", help="client counts for the transformers rows")
    p.add_argument("--no-hf", action="store_true")
    return p.parse_args()


def pct(values, q):
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


HEAD = (f"{'engine':<26}{'clients':>8}{'tok/s':>10}{'vs 1 client':>12}{'vs HF':>8}{'TTFT p50':>10}"
        f"{'TTFT p95':>10}{'lat p50':>9}{'lat p95':>9}{'cached':>8}")


def row_text(r, single, hf) -> str:
    if "error" in r:
        return f"{r['engine']:<26}{r['clients']:>8}  ERROR {r['error']}"
    scale = f"{r['tok_s'] / single[r['engine']]:.2f}x" if r["engine"] in single else "-"
    vs = f"{r['tok_s'] / hf[r['clients']]:.1f}x" if r["clients"] in hf else "-"
    return (f"{r['engine']:<26}{r['clients']:>8}{r['tok_s']:>10.1f}{scale:>12}{vs:>8}{r['ttft50']:>9.3f}s"
            f"{r['ttft95']:>9.3f}s{r['lat50']:>8.2f}s{r['lat95']:>8.2f}s{100 * r['cached']:>7.0f}%")


def serve_run(engine, clients: int, args, vocab: int, seed: int) -> dict:
    import torch

    from glm_agent.engine.scheduler import Scheduler

    g = torch.Generator().manual_seed(seed)
    shared = torch.randint(0, vocab, (args.shared,), generator=g).tolist()
    prompts = [[shared + torch.randint(0, vocab, (args.own,), generator=g).tolist()
                for _ in range(args.rounds)] for _ in range(clients)]
    sched = Scheduler(engine, max_batch=max(clients, 1))
    ttfts, latencies, cached, tokens = [], [], [], []
    lock = threading.Lock()

    def client(i):
        for prompt in prompts[i]:
            start = time.perf_counter()
            gen = sched.submit(prompt, args.new_tokens)
            first = None
            n = 0
            for _ in gen:
                n += 1
                if first is None:
                    first = time.perf_counter() - start
            with lock:
                ttfts.append(first)
                latencies.append(time.perf_counter() - start)
                cached.append(gen.cached_tokens)
                tokens.append(n)

    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        sync(engine.device)
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        sync(engine.device)
        wall = time.perf_counter() - t
    finally:
        sched.close()
    return dict(clients=clients, tok_s=sum(tokens) / wall, ttft50=pct(ttfts, 0.5), ttft95=pct(ttfts, 0.95),
                lat50=pct(latencies, 0.5), lat95=pct(latencies, 0.95),
                cached=sum(cached) / (len(cached) * (args.shared + args.own)))


def run_ours(args, cfg_kw, wname, mode, clients, dev) -> list[dict]:
    import torch

    from glm_agent.engine.engine import Engine

    reset_mem(dev)
    config, model = random_decoder(cfg_kw, torch.bfloat16, dev, QUANTS[wname])
    ctx = args.shared + args.own + args.new_tokens + 16
    engine = Engine(model, config, device=dev, dtype=torch.bfloat16, max_context=ctx,
                    cache_tokens=(max(clients) + 2) * ctx, cuda_graphs=mode == "graph")
    serve_run(engine, min(4, max(clients)), args, config.vocab_size, seed=99)  # warm-up: capture, packing
    rows = []
    for i, n in enumerate(clients):
        engine.cache.block_manager.clear_prefix_cache()  # each row starts cold, then shares its prefix
        try:
            rows.append(dict(engine=f"ours {wname} {mode}", **serve_run(engine, n, args, config.vocab_size, seed=i)))
        except Exception as e:  # a failing row must not hide the others
            rows.append(dict(engine=f"ours {wname} {mode}", clients=n, error=f"{type(e).__name__}: {e}"[:160]))
        print("  " + row_text(rows[-1], {}, {}), flush=True)  # as it comes: a time limit keeps what ran
    del model, engine
    reset_mem(dev)
    return rows


def hf_generate(model, ids, k: int) -> float:
    """Seconds for transformers to generate `k` tokens for every row of `ids`."""
    import torch

    sync(ids.device)
    t = time.perf_counter()
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k, do_sample=False)
    sync(ids.device)
    return time.perf_counter() - t


def run_hf(args, cfg_kw, clients, dev) -> list[dict]:
    import torch

    model = run_hf_config(cfg_kw, args.shared + args.own + args.new_tokens + 8, dev)
    g = torch.Generator().manual_seed(5)
    rows = []
    for n in clients:
        ids = torch.randint(0, cfg_kw["vocab_size"], (n, args.shared + args.own), generator=g).to(dev)

        try:
            hf_generate(model, ids, 1)  # warm-up
            first = statistics.median(hf_generate(model, ids, 1) for _ in range(2))
            whole = hf_generate(model, ids, args.new_tokens)
            rows.append(dict(engine="HF GlmForCausalLM eager", clients=n, tok_s=n * args.new_tokens / whole,
                             ttft50=first, ttft95=first, lat50=whole, lat95=whole, cached=0.0))
        except Exception as e:
            rows.append(dict(engine="HF GlmForCausalLM eager", clients=n, error=f"{type(e).__name__}: {e}"[:160]))
        print("  " + row_text(rows[-1], {}, {}), flush=True)
    del model
    reset_mem(dev)
    return rows


def main() -> int:
    args = parse_args()
    import torch

    if not args.small and not torch.cuda.is_available():
        print("gpu_serve.py: no CUDA device found; run `python bench/gpu_serve.py --small` to exercise the "
              "script on CPU.", file=sys.stderr)
        return 2
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg_kw = SMALL if args.small else GLM4_9B
    if args.small:
        args.shared, args.own, args.new_tokens = min(args.shared, 48), min(args.own, 16), min(args.new_tokens, 8)
    clients = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",") if args.modes else (["graph", "eager"] if dev.type == "cuda" else ["eager"])
    name = torch.cuda.get_device_name() if dev.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; config: {'small' if args.small else 'GLM-4-9B'}; "
          f"prompt {args.shared} shared + {args.own} own tokens, {args.new_tokens} new, {args.rounds} rounds")
    rows = []
    for w in args.weights.split(","):
        for mode in modes:
            print(f"running ours {w} {mode} ...", flush=True)
            rows += run_ours(args, cfg_kw, w, mode, clients, dev)
    if not args.no_hf:
        print("running transformers GlmForCausalLM eager (static batches) ...", flush=True)
        try:
            rows += run_hf(args, cfg_kw, [int(c) for c in args.hf_clients.split(",")], dev)
        except Exception as e:
            print(f"transformers baseline failed: {type(e).__name__}: {e}")
    single = {r["engine"]: r["tok_s"] for r in rows if r.get("clients") == 1 and "tok_s" in r}
    hf = {r["clients"]: r["tok_s"] for r in rows if r["engine"].startswith("HF") and "tok_s" in r}
    print()
    print(HEAD)
    print("-" * len(HEAD))
    for r in rows:
        print(row_text(r, single, hf))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
