"""Decode speed with and without grammar-constrained tool calls, and what the masks cost.

    python bench/constrained.py                 # the embedded model on CPU, 2 rounds
    python bench/constrained.py --model smollm2 --tokens 64 --rounds 3

One prompt asks for a tool call with long arguments (Python code), so most decoded tokens are
inside the call and get a mask. Each round decodes the same turn greedily twice, constraints
off then on, through `LocalModel` (the scheduler path every turn takes); the prompt's KV
blocks are reused from the warm-up, so both measure decoding. Printed side by side: decode
tokens/s off and on, the masked steps, the mask time per masked token (llguidance's mask, its
unpacking and the masked_fill), and that time as a share of a decode step (target < 5%).
The best round of each is kept: on a shared machine it is the least disturbed one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.messages import UserMessage
from glm_agent.models.local import LocalModel

PY = ToolSpec(
    name="python",
    description="Run Python code in a Jupyter kernel and return what it prints.",
    parameters={"type": "object", "properties": {"code": {"type": "string", "description": "Python code"}},
                "required": ["code"]},
)
WEATHER = ToolSpec(
    name="get_weather",
    description="Weather forecast for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]},
)
ASK = [UserMessage(content="Use the python tool: write a function that lists the primes below 10000 with a sieve, "
                           "then print how many there are and the last ten of them.")]


async def turn(model: LocalModel, tokens: int, constrained: bool) -> dict:
    settings = GenerationSettings(max_new_tokens=tokens, constrained=constrained, tool_choice="required")
    if not constrained:
        settings.tool_choice = "auto"  # "required" needs the grammar; auto + no grammar is the old path
    start = time.perf_counter()
    _, calls, done = await model.complete(ASK, [PY, WEATHER], settings)
    seconds = time.perf_counter() - start
    stats = dict(model.constraint_stats)
    return {"seconds": seconds, "tokens": done.completion_tokens, "calls": len(calls), **stats}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--tokens", type=int, default=48, help="tokens decoded per turn")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(f"load: {os.getloadavg()[0]:.2f}  model: {args.model}  tokens/turn: {args.tokens}")
    model = LocalModel(args.model, progress=False).load()
    await turn(model, 4, constrained=True)  # warm-up: prompt KV cached, llguidance's tokenizer built
    off, on = [], []
    for _ in range(args.rounds):
        off.append(await turn(model, args.tokens, constrained=False))
        on.append(await turn(model, args.tokens, constrained=True))
    a = min(off, key=lambda r: r["seconds"] / max(r["tokens"], 1))
    b = min(on, key=lambda r: r["seconds"] / max(r["tokens"], 1))
    step_off = a["seconds"] / a["tokens"]
    mask = b["mask_seconds"] / max(b["masked_steps"], 1)
    print(f"{'':28}{'off':>12}{'on':>12}")
    print(f"{'decode tok/s':28}{a['tokens'] / a['seconds']:>12.2f}{b['tokens'] / b['seconds']:>12.2f}")
    print(f"{'tokens decoded':28}{a['tokens']:>12}{b['tokens']:>12}")
    print(f"{'masked steps':28}{0:>12}{b['masked_steps']:>12}")
    print(f"{'mask ms per masked token':28}{'-':>12}{mask * 1e3:>12.3f}")
    print(f"{'mask share of a decode step':28}{'-':>12}{100 * mask / step_off:>11.2f}%")
    print(f"{'mask share of the turn':28}{'-':>12}{100 * b['mask_seconds'] / b['seconds']:>11.2f}%")
    print(f"load after: {os.getloadavg()[0]:.2f}")
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
