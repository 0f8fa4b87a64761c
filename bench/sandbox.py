"""Sandbox speed: kernel cold start, per-execute latency, restart, shell command.

Compares the bubblewrap sandbox with resource limits only (`unsafe_no_sandbox`), side by
side with the ratio. Targets: cold start <= 1.5 s, execute <= 20 ms median.

    python bench/sandbox.py [--starts 5] [--executes 200] [--restarts 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

from glm_agent.sandbox import KernelSession, SandboxConfig, bwrap_available, run_command


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def measure(config: SandboxConfig, args: argparse.Namespace) -> dict[str, float]:
    ws = tempfile.mkdtemp(prefix="glm-bench-")
    starts = []
    for _ in range(args.starts):
        t0 = time.perf_counter()
        k = KernelSession(ws, config)
        k.start_sync()
        starts.append(time.perf_counter() - t0)
        k.shutdown_sync()
    k = KernelSession(ws, config)
    k.start_sync()
    for _ in range(10):  # warm-up
        k.execute_sync("x = 1")
    lat = []
    for _ in range(args.executes):
        t0 = time.perf_counter()
        res = k.execute_sync("x = 1")
        lat.append(time.perf_counter() - t0)
        assert res.status == "ok"
    restarts = []
    for _ in range(args.restarts):
        t0 = time.perf_counter()
        k.restart_sync()
        k.execute_sync("x = 1")
        restarts.append(time.perf_counter() - t0)
    k.shutdown_sync()
    shell = []
    for _ in range(args.shells):
        t0 = time.perf_counter()
        r = asyncio.run(run_command("true", ws, config))
        shell.append(time.perf_counter() - t0)
        assert r.ok
    return {
        "cold start (median, s)": statistics.median(starts),
        "execute `x = 1` median (ms)": statistics.median(lat) * 1000,
        "execute `x = 1` p95 (ms)": pct(lat, 0.95) * 1000,
        "restart + first execute (median, s)": statistics.median(restarts),
        "shell `true` median (ms)": statistics.median(shell) * 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--executes", type=int, default=200)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--shells", type=int, default=20)
    args = ap.parse_args()
    base = SandboxConfig(memory_mb=2048, nprocs=256)
    plain = measure(base.with_(unsafe_no_sandbox=True), args)
    boxed = measure(base, args) if bwrap_available() else None
    targets = {"cold start (median, s)": "<= 1.5", "execute `x = 1` median (ms)": "<= 20"}
    width = max(len(k) for k in plain)
    print(f"{'metric':<{width}}  {'limits only':>12}  {'bwrap sandbox':>13}  {'ratio':>6}  target")
    for key, value in plain.items():
        b = boxed[key] if boxed else float("nan")
        ratio = b / value if boxed and value else float("nan")
        print(f"{key:<{width}}  {value:>12.2f}  {b:>13.2f}  {ratio:>5.2f}x  {targets.get(key, '')}")
    if boxed is None:
        print("(bubblewrap not installed: sandbox column not measured)")


if __name__ == "__main__":
    main()
