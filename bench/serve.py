"""Benchmark `glm-agent serve`: latency and throughput for N concurrent streaming clients,
next to llama.cpp's own server on the same GGUF.

    python bench/serve.py                      # the embedded Qwen2.5-Coder-1.5B on CPU
    python bench/serve.py --model smollm2      # the 135M test model (fast)
    python bench/serve.py --clients 1,2 --rounds 1 --max-tokens 16 --no-llamacpp

The server runs in-process on 127.0.0.1 (free port). Each of N clients sends `rounds`
streaming requests back to back (each prompt ends with its own request number, so prompts
share a prefix but are not identical); every request asks for `--max-tokens` tokens, the count
read from `usage`. The `direct` row calls the model without HTTP. Our scheduler decodes all
clients in one batch, so aggregate tok/s should grow with N. With the `xllamacpp` wheel
installed, the same clients then run against llama.cpp's server (`xllamacpp.Server`) on the
model's GGUF, with as many parallel slots as clients and continuous batching.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time

import httpx

PROMPT = "Write a short paragraph about the history of the bicycle."


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


_counter = iter(range(10**9))


async def one_request(http: httpx.AsyncClient, url: str, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": f"{PROMPT} (request {next(_counter)})"}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft = None
    tokens = deltas = 0
    async with http.stream("POST", url + "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                deltas += 1
                if ttft is None:
                    ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    # A server that sends no usage: about one token per text delta.
    return {"latency": time.perf_counter() - start, "ttft": ttft or 0.0, "tokens": tokens or deltas}


async def run_clients(url: str, n: int, rounds: int, max_tokens: int) -> tuple[list[dict], float]:
    async with httpx.AsyncClient(timeout=None) as http:
        async def client() -> list[dict]:
            return [await one_request(http, url, max_tokens) for _ in range(rounds)]

        start = time.perf_counter()
        results = await asyncio.gather(*(client() for _ in range(n)))
        wall = time.perf_counter() - start
    return [r for rs in results for r in rs], wall


async def run_direct(model, rounds: int, max_tokens: int) -> tuple[list[dict], float]:
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.core.events import ModelDone, TextDelta
    from glm_agent.core.messages import UserMessage

    settings = GenerationSettings(max_new_tokens=max_tokens, temperature=0.0)
    out = []
    wall_start = time.perf_counter()
    for _ in range(rounds):
        start, ttft, tokens = time.perf_counter(), None, 0
        async for event in model.stream([UserMessage(content=PROMPT)], [], settings):
            if isinstance(event, TextDelta) and event.text and ttft is None:
                ttft = time.perf_counter() - start
            elif isinstance(event, ModelDone):
                tokens = event.completion_tokens
        out.append({"latency": time.perf_counter() - start, "ttft": ttft or 0.0, "tokens": tokens})
    return out, time.perf_counter() - wall_start


def row(label: str, results: list[dict], wall: float) -> dict:
    lat = [r["latency"] for r in results]
    ttft = [r["ttft"] for r in results]
    tokens = sum(r["tokens"] for r in results)
    return {
        "label": label,
        "requests": len(results),
        "p50": pct(lat, 0.5),
        "p95": pct(lat, 0.95),
        "ttft50": pct(ttft, 0.5),
        "ttft95": pct(ttft, 0.95),
        "rps": len(results) / wall,
        "tps": tokens / wall,
        "tok_per_req": tokens / len(results),
    }


def print_table(rows: list[dict], llama: dict[str, dict]) -> None:
    """Ratios first: aggregate tok/s vs our 1-client row and vs llama.cpp at the same N, TTFT vs 1 client."""
    one = next((r for r in rows if r["label"] == "1"), rows[0])
    head = (
        f"{'clients':>8} {'tok/s vs 1':>10} {'vs llama.cpp':>12} {'TTFT vs 1':>9} {'reqs':>5} {'tok/req':>7}"
        f" {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9} {'TTFT p95':>9} {'tok/s':>7}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        ref = llama.get(r["label"])
        vs = f"{r['tps'] / ref['tps']:.2f}x" if ref else "-"
        print(
            f"{r['label']:>8} {r['tps'] / one['tps']:>9.2f}x {vs:>12} {r['ttft50'] / max(one['ttft50'], 1e-9):>8.2f}x"
            f" {r['requests']:>5} {r['tok_per_req']:>7.1f} {r['p50']:>7.2f} {r['p95']:>7.2f}"
            f" {r['ttft50']:>9.3f} {r['ttft95']:>9.3f} {r['tps']:>7.2f}"
        )
    if llama:
        print("llama.cpp server (xllamacpp), same clients:")
        for r in llama.values():
            print(
                f"{r['label']:>8} {r['tps'] / llama[next(iter(llama))]['tps']:>9.2f}x {'':>12} {'':>9}"
                f" {r['requests']:>5} {r['tok_per_req']:>7.1f} {r['p50']:>7.2f} {r['p95']:>7.2f}"
                f" {r['ttft50']:>9.3f} {r['ttft95']:>9.3f} {r['tps']:>7.2f}"
            )


def llama_server(gguf, slots: int, threads: int):
    """llama.cpp's HTTP server on a free loopback port, `slots` parallel, continuous batching."""
    import socket

    import xllamacpp as xlc

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = xlc.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = slots
    p.n_ctx = 2048 * slots  # 2048 tokens per slot
    p.cont_batching = True
    p.port = port
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    server = xlc.Server(p)
    return server, server.listening_address.rstrip("/") + "/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded | smollm2 | a checkpoint path")
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quant", default=None, choices=["int8", "int4"], help="weight-only quantization")
    parser.add_argument("--dtype", default=None, help="compute dtype (default: the model's, bf16)")
    parser.add_argument("--no-llamacpp", action="store_true", help="skip llama.cpp's server")
    args = parser.parse_args()

    from glm_agent.models.local import LocalModel
    from glm_agent.serve import create_app, serve_in_thread

    load_start = os.getloadavg()[0]  # other work on the machine skews every number below

    model = LocalModel(args.model, dtype=args.dtype, quant=args.quant, progress=False)
    t0 = time.perf_counter()
    model.load()
    load_s = time.perf_counter() - t0
    levels = [int(x) for x in args.clients.split(",")]

    # Warm up once (first-call allocations), then measure the model alone, then through HTTP.
    asyncio.run(run_direct(model, 1, 4))
    direct, wall = asyncio.run(run_direct(model, args.rounds, args.max_tokens))
    rows = [row("direct", direct, wall)]
    with serve_in_thread(create_app(model, "bench")) as url:
        for n in levels:
            results, wall = asyncio.run(run_clients(url, n, args.rounds, args.max_tokens))
            rows.append(row(str(n), results, wall))

    import torch

    llama: dict[str, dict] = {}
    gguf = model.checkpoint.path if model.checkpoint.source == "gguf" else None
    if args.no_llamacpp:
        note = "llama.cpp: skipped (--no-llamacpp)"
    elif gguf is None:
        note = "llama.cpp: skipped (the model is not a GGUF)"
    else:
        try:
            import xllamacpp  # noqa: F401
        except ImportError:
            note = "llama.cpp: skipped (pip install xllamacpp to compare)"
        else:
            note = f"llama.cpp: xllamacpp server on {gguf.name}, slots = clients, continuous batching"
            asyncio.run(model.aclose())  # its memory and threads go to llama.cpp now
            for n in levels:
                server, lurl = llama_server(gguf, n, torch.get_num_threads())
                try:
                    asyncio.run(run_clients(lurl, 1, 1, 4))  # warm-up
                    results, wall = asyncio.run(run_clients(lurl, n, args.rounds, args.max_tokens))
                    llama[str(n)] = row(str(n), results, wall)
                finally:
                    del server

    print(
        f"glm-agent serve bench: model={args.model} dtype={args.dtype or 'default'} quant={args.quant} (loaded in {load_s:.1f} s), max_tokens={args.max_tokens}, "
        f"rounds={args.rounds}, streaming, temperature 0"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at start/end {load_start:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print(note)
    print_table(rows, llama)


if __name__ == "__main__":
    main()
