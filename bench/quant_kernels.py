"""Per-kernel timings of `QuantLinear` by number of rows M: where the packed kernels stop winning.

    python bench/quant_kernels.py                    # CPU, the embedded model's shapes
    python bench/quant_kernels.py --device cuda      # GLM-4-9B shapes on the GPU

Prints ms per call for each path: the dense GEMM on a ready dense weight (in `quant.dense_dtype`,
the dtype the "dequant" path computes in), the packed int4/int8 kernel, "dequant" (dequantize just in
time + dense GEMM) and "kept" (the same with `keep_dense_weights`), and the ratio dense / path (> 1:
faster than dense). The paths run interleaved and the best of `--reps` is kept, so a shared machine
disturbs them alike. `quant.MAX_KERNEL_ROWS` (and `MAX_KERNEL_ROWS_DENSE_KEPT`) hold the crossovers
`choose_kernel` uses: set them from this table on the target machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # name: (in_features K, out_features N)
    "cpu": {"qkv 1536->2048": (1536, 2048), "gate_up 1536->17920": (1536, 17920), "down 8960->1536": (8960, 1536)},
    "cuda": {"qkv 4096->4608": (4096, 4608), "gate_up 4096->27392": (4096, 27392), "down 13696->4096": (13696, 4096)},
}


def _timed(fn, dev) -> float:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - t)


def best_of(fns: dict, dev, reps: int) -> dict:
    """Best ms of `reps` rounds per path, rounds interleaved across the paths."""
    for fn in fns.values():
        fn()  # warm-up: packed forms, allocator
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            best[name] = min(best[name], _timed(fn, dev))
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="1,4,16,64,128,256,512")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--shapes", default=None, help="comma list of shape names (default: all)")
    p.add_argument("--bits", default="8,4")
    args = p.parse_args()

    import torch
    import torch.nn.functional as F
    from torch import nn

    from glm_agent.engine.quant import QuantLinear, dense_dtype, kernel_names

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    ddtype = dense_dtype(dev)
    shapes = SHAPES["cuda" if dev.type == "cuda" else "cpu"]
    if args.shapes:
        shapes = {k: v for k, v in shapes.items() if k in args.shapes.split(",")}
    print(f"device {torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU'}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} threads; load avg {os.getloadavg()[0]:.1f}; best of {args.reps}; "
          f"dense = {ddtype} F.linear; ratio = dense ms / path ms")
    for sname, (k, n) in shapes.items():
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0, 0.02)
        dense_w = lin.weight.detach().to(dev, ddtype)
        for bits in (int(b) for b in args.bits.split(",")):
            gs = 128 if bits == 4 else None
            m = QuantLinear.from_linear(lin, bits, gs).to(dev)
            kept = QuantLinear.from_linear(lin, bits, gs).to(dev)
            kept.keep_dense, kept.kernel = True, "dequant"
            names = [x for x in kernel_names(m, dev.type) if x != "reference"] + ["kept"]
            print(f"\n{sname} int{bits}" + (f" g{gs}" if gs else ""))
            print(f"{'M':>5}{'dense ms':>10}" + "".join(f"{x + ' ms':>14}{'ratio':>7}" for x in names), flush=True)
            for rows in (int(r) for r in args.rows.split(",")):
                x = torch.randn(rows, k, device=dev, dtype=torch.bfloat16)
                fns = {"dense": lambda x=x, w=dense_w: F.linear(x.to(ddtype), w)}
                for name in names:
                    mod = kept if name == "kept" else m
                    fns[name] = lambda mod=mod, name=name, x=x: (
                        setattr(mod, "kernel", "dequant" if name == "kept" else name), mod(x))
                with torch.no_grad():
                    best = best_of(fns, dev, args.reps)
                line = f"{rows:>5}{best['dense']:>10.3f}"
                line += "".join(f"{best[x]:>14.3f}{best['dense'] / best[x]:>7.2f}" for x in names)
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
