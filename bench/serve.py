"""Benchmark `glm-agent serve`: latency and throughput for N concurrent streaming clients.

    python bench/serve.py                      # the embedded Qwen2.5-Coder-1.5B on CPU
    python bench/serve.py --model smollm2      # the 135M test model (fast)
    python bench/serve.py --clients 1,2,4 --rounds 2 --max-tokens 32

The server runs in-process on 127.0.0.1 (free port). Each of N clients sends `rounds`
streaming requests back to back; every request asks for exactly `--max-tokens` tokens
(`ignore_eos`-style: a prompt that makes the model talk, and the count read from `usage`).
The `direct` row calls the model without HTTP: the server's overhead is the ratio to it.
The engine decodes one stream at a time, so requests queue: throughput stays flat with N
while latency grows about N-fold; time to first token shows the wait in line.
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


async def one_request(http: httpx.AsyncClient, url: str, max_tokens: int) -> dict:
    body = {
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    ttft = None
    tokens = 0
    async with http.stream("POST", url + "/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return {"latency": time.perf_counter() - start, "ttft": ttft or 0.0, "tokens": tokens}


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


def print_table(rows: list[dict], base: dict) -> None:
    head = (
        f"{'clients':>8} {'reqs':>5} {'tok/req':>7} {'p50 s':>7} {'p95 s':>7} {'TTFT p50':>9} {'TTFT p95':>9}"
        f" {'req/s':>7} {'tok/s':>7} {'p50 vs direct':>14} {'tok/s vs direct':>16}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['label']:>8} {r['requests']:>5} {r['tok_per_req']:>7.1f} {r['p50']:>7.2f} {r['p95']:>7.2f}"
            f" {r['ttft50']:>9.3f} {r['ttft95']:>9.3f} {r['rps']:>7.3f} {r['tps']:>7.2f}"
            f" {r['p50'] / base['p50']:>13.2f}x {r['tps'] / base['tps']:>15.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded | smollm2 | a checkpoint path")
    parser.add_argument("--clients", default="1,2,4", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quant", default=None, choices=["int8", "int4"], help="weight-only quantization")
    args = parser.parse_args()

    from glm_agent.models.local import LocalModel
    from glm_agent.serve import create_app, serve_in_thread

    load_start = os.getloadavg()[0]  # other work on the machine skews every number below

    model = LocalModel(args.model, quant=args.quant, progress=False)
    t0 = time.perf_counter()
    model.load()
    load_s = time.perf_counter() - t0
    levels = [int(x) for x in args.clients.split(",")]

    # Warm up once (first-call allocations), then measure the model alone, then through HTTP.
    asyncio.run(run_direct(model, 1, 4))
    direct, wall = asyncio.run(run_direct(model, args.rounds, args.max_tokens))
    base = row("direct", direct, wall)
    rows = [base]
    with serve_in_thread(create_app(model, "bench")) as url:
        for n in levels:
            results, wall = asyncio.run(run_clients(url, n, args.rounds, args.max_tokens))
            rows.append(row(str(n), results, wall))

    import torch

    print(
        f"glm-agent serve bench: model={args.model} quant={args.quant} (loaded in {load_s:.1f} s), max_tokens={args.max_tokens}, "
        f"rounds={args.rounds}, streaming, temperature 0"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at start/end {load_start:.1f}/{os.getloadavg()[0]:.1f}"
    )
    print_table(rows, base)


if __name__ == "__main__":
    main()
