"""Eval harness overhead: oracle runs per suite, concurrency 1 vs K, samples per second.

The oracle replays gold actions, so this times the environments (SQLite, sandboxes, kernel,
Chromium + shop) and the runner, not a model. Run: python bench/evals_oracle.py [--limit N] [-k K]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from glm_agent.evals import make_suite, run_eval
from glm_agent.evals.oracle import OracleFactory


async def one(name: str, limit: int, concurrency: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        summary = await run_eval([make_suite(name)], OracleFactory(), out, limit=limit,
                                 concurrency=concurrency, progress=False)
        return time.perf_counter() - start, summary["suites"][name]["score"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("-k", "--concurrency", type=int, default=2)
    ap.add_argument("suites", nargs="*", default=["db", "fc", "os", "math", "web"])
    args = ap.parse_args()
    print(f"oracle runs, {args.limit} samples per suite (time includes environment setup and judging)")
    print(f"{'suite':<6}{'score':>7}{'s (k=1)':>10}{'s/sample':>10}{f's (k={args.concurrency})':>10}{'speedup':>9}")
    for name in args.suites:
        asyncio.run(one(name, 1, 1))  # warm-up: imports, Chromium/kernel binaries in the page cache
        t1, score = asyncio.run(one(name, args.limit, 1))
        tk, _ = asyncio.run(one(name, args.limit, args.concurrency))
        print(f"{name:<6}{100 * score:>6.0f}%{t1:>10.2f}{t1 / args.limit:>10.2f}{tk:>10.2f}{t1 / tk:>8.2f}x")


if __name__ == "__main__":
    main()
