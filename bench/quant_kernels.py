"""Per-kernel timings of `QuantLinear` by number of rows M: where the packed kernels stop winning.

    python bench/quant_kernels.py                    # CPU, the embedded model's shapes
    python bench/quant_kernels.py --device cuda      # GLM-4-9B shapes on the GPU

Prints ms per call for each path (dense float, the packed int4/int8 kernel, dequantize + GEMM)
and the ratio dense / path (> 1: the path is faster than dense). `quant.MAX_KERNEL_ROWS` holds
the crossover used by `choose_kernel`; set it from this table on the target machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = {  # name: (in_features K, out_features N)
    "cpu": {"qkv 1536->2048": (1536, 2048), "gate_up 1536->17920": (1536, 17920), "down 8960->1536": (8960, 1536)},
    "cuda": {"qkv 4096->4608": (4096, 4608), "gate_up 4096->27392": (4096, 27392), "down 13696->4096": (13696, 4096)},
}


def timeit(fn, dev, reps: int) -> float:
    import torch

    fn()
    times = []
    for _ in range(reps):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", default="1,4,8,16,32,64,128,512")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--shapes", default=None, help="comma list of shape names (default: all)")
    args = p.parse_args()

    import torch
    from torch import nn

    from glm_agent.engine.quant import QuantLinear, kernel_names

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu", file=sys.stderr)
        return 2
    dense_dtype = torch.bfloat16
    shapes = SHAPES["cuda" if dev.type == "cuda" else "cpu"]
    if args.shapes:
        shapes = {k: v for k, v in shapes.items() if k in args.shapes.split(",")}
    print(f"device {torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU'}; torch {torch.__version__}; "
          f"median of {args.reps}; dense = {dense_dtype} F.linear; ratio = dense ms / path ms")
    for sname, (k, n) in shapes.items():
        lin = nn.Linear(k, n, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0, 0.02)
        dense_w = lin.weight.detach().to(dev, dense_dtype)
        for bits, gs in ((8, None), (4, 128)):
            m = QuantLinear.from_linear(lin, bits, gs).to(dev)
            names = [x for x in kernel_names(m, dev.type) if x != "reference"]
            print(f"\n{sname} int{bits}" + (f" g{gs}" if gs else ""))
            print(f"{'M':>5}{'dense ms':>10}" + "".join(f"{x + ' ms':>14}{'ratio':>7}" for x in names))
            for rows in (int(r) for r in args.rows.split(",")):
                x = torch.randn(rows, k, device=dev, dtype=dense_dtype)
                t_dense = timeit(lambda x=x, w=dense_w: torch.nn.functional.linear(x, w), dev, args.reps)
                line = f"{rows:>5}{t_dense:>10.3f}"
                with torch.no_grad():
                    for name in names:
                        m.kernel = name
                        t = timeit(lambda m=m, x=x: m(x), dev, args.reps)
                        line += f"{t:>14.3f}{t_dense / t:>7.2f}"
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
