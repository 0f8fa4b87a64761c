"""Accuracy of weight-only quantization on a real model: perplexity on a fixed text and top-1
next-token agreement with the float model.

    python bench/quant_accuracy.py                        # the embedded Qwen2.5-Coder-1.5B (CPU)
    python bench/quant_accuracy.py --model smollm2        # SmolLM2-135M: quick
    python bench/quant_accuracy.py --device cuda --dtype bf16

The text is `bench/data/ppl_text.txt` (a few paragraphs written for this project: prose, a
technical paragraph, Python code). Float = the checkpoint's weights as loaded (for the embedded
GGUF: its Q4_K_M weights dequantized to float, so "int4" here quantizes them a second time).
Each model is loaded from the source once, quantized layer by layer as it streams in, scored with
`Engine.forward_logits` over the whole text, and freed before the next.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXT = Path(__file__).with_name("data") / "ppl_text.txt"
VARIANTS = {
    "float": None,
    "int8": {"bits": 8},
    "int4 g128": {"bits": 4, "group_size": 128},
    "int4 g64": {"bits": 4, "group_size": 64},
    "int4 g32": {"bits": 4, "group_size": 32},
    "int4 g128 +head": {"bits": 4, "group_size": 128, "lm_head": True},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="embedded")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of: " + ", ".join(VARIANTS))
    args = p.parse_args()

    import torch

    from glm_agent.engine.engine import Engine
    from glm_agent.engine.loading import open_checkpoint

    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    ck = open_checkpoint(args.model)
    ids = ck.tokenizer.encode(TEXT.read_text(encoding="utf-8"), allow_special=False)
    targets = torch.tensor(ids[1:])
    print(f"model {args.model} ({ck.config.arch}, {ck.config.num_layers} layers, hidden {ck.config.hidden_size}); "
          f"text {len(ids)} tokens; device {args.device}, activations {args.dtype}; torch {torch.__version__}")

    base_top1 = base_logp = None
    rows = []
    for name in args.variants.split(","):
        quant = VARIANTS[name]
        t0 = time.perf_counter()
        eng = Engine.from_weights(ck.config, ck.weights(torch.float32), device=args.device, dtype=dtype,
                                  quant=quant, max_context=len(ids) + 8)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        logits = eng.forward_logits(ids)[:-1].float().cpu()
        t_fwd = time.perf_counter() - t0
        logp = torch.log_softmax(logits, dim=-1)
        nll = -logp.gather(1, targets[:, None]).mean().item()
        top1 = logits.argmax(-1)
        row = dict(name=name, ppl=math.exp(nll), load=t_load, fwd=t_fwd)
        if base_top1 is None:
            base_top1, base_logp, base_ppl = top1, logp, row["ppl"]
        row["agree"] = (top1 == base_top1).float().mean().item()
        # KL(float || quantized) per token, nats: how far the whole next-token distribution moved
        row["kl"] = (base_logp.exp() * (base_logp - logp)).sum(-1).mean().item()
        row["ratio"] = row["ppl"] / base_ppl
        rows.append(row)
        print(f"  {name:<16} ppl {row['ppl']:.3f}  ({t_load:.0f}s load, {t_fwd:.0f}s forward)", flush=True)
        del eng, logits, logp
        gc.collect()

    print()
    print(f"{'weights':<18}{'perplexity':>11}{'ppl ratio':>11}{'top-1 agree':>13}{'KL nats/tok':>13}")
    for r in rows:
        print(f"{r['name']:<18}{r['ppl']:>11.3f}{r['ratio']:>11.3f}{100 * r['agree']:>12.1f}%{r['kl']:>13.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
