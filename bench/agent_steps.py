"""Prefix caching on an agent's steps: prompt tokens computed and time to first token per step.

    python bench/agent_steps.py                    # the embedded Qwen2.5-Coder-1.5B on CPU
    python bench/agent_steps.py --model smollm2    # the 135M test model (fast)

A scripted 4-step tool conversation (system prompt with the `--tools` schemas, the user's task, then
three rounds of tool call + tool result) is replayed with a real `LocalModel`: step k sends
the conversation up to its k-th model turn, as the agent loop does, and the model generates
`--max-tokens` tokens. The same steps run with the prefix cache off, then on (a fresh cache);
"computed" is prompt tokens minus `ModelDone.cached_tokens`, time to first token is taken
when the first new token is out (the "generating" progress phase). The machine's load is
printed with the table: on a shared machine timings are noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

TASK = "Load the numbers 1..1000, compute their mean and standard deviation, then plot a histogram."
CALLS = [
    "import numpy as np\nx = np.arange(1, 1001)\nprint(x.mean())",
    "print(x.std())",
    "import matplotlib.pyplot as plt\nplt.hist(x, bins=20)\nplt.savefig('hist.png')\nprint('saved')",
]
RESULTS = ["500.5", "288.6749902572095", "saved"]


def conversation():
    """The messages of steps 1..4 (each a prefix of the next, plus that step's tool result)."""
    from glm_agent.core.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage

    msgs = [SystemMessage(content="You are a careful data analyst. Use the python tool."), UserMessage(content=TASK)]
    steps = [list(msgs)]
    for i, (code, result) in enumerate(zip(CALLS, RESULTS)):
        call = ToolCall(id=f"call_{i}", name="python", arguments={"code": code})
        msgs += [AssistantMessage(content="", tool_calls=[call]),
                 ToolMessage(tool_call_id=call.id, name="python", content=result)]
        steps.append(list(msgs))
    return steps


def tool_specs(names: str):
    """The specs the agent sends for `--tools` (the built-ins' own descriptions and schemas)."""
    from glm_agent.tools.browser.tool import BrowserTool
    from glm_agent.tools.image.tool import ImageTool
    from glm_agent.tools.python import PythonTool

    built = {"python": PythonTool, "browser": BrowserTool, "image": ImageTool}
    return [built[n.strip()]().spec() for n in names.split(",")]


async def one_step(model, messages, tools, settings) -> tuple[int, int, float]:
    from glm_agent.core.events import ModelDone
    from glm_agent.core.progress import progress_handler

    t0 = time.perf_counter()
    first: list[float] = []

    def seen(p):
        if p.phase == "generating" and not first:
            first.append(time.perf_counter() - t0)

    done = None
    with progress_handler(seen):
        async for ev in model.stream(messages, tools, settings):
            if isinstance(ev, ModelDone):
                done = ev
    return done.prompt_tokens, done.prompt_tokens - done.cached_tokens, first[0] if first else float("nan")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tools", default="python", help="built-in tools offered: python (the chat default) or "
                    "python,browser,image (every schema in the system prompt)")
    args = ap.parse_args()

    import torch

    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.models.local import LocalModel

    torch.set_num_threads(args.threads)
    model = LocalModel(args.model, progress=False).load()
    tools = tool_specs(args.tools)
    settings = GenerationSettings(max_new_tokens=args.max_tokens)
    steps = conversation()
    bm = model.engine.cache.block_manager
    await one_step(model, steps[0][:1], [], GenerationSettings(max_new_tokens=1))  # warm-up
    rows = {}
    for mode in ("off", "on"):
        bm.prefix_cache = mode == "on"
        bm.clear_prefix_cache()  # a cold cache for each mode
        rows[mode] = []
        for msgs in steps:
            rows[mode].append(await one_step(model, msgs, tools, settings))
            print(f"  cache {mode}, step {len(rows[mode])}: prompt {rows[mode][-1][0]}, computed "
                  f"{rows[mode][-1][1]}, TTFT {rows[mode][-1][2]:.2f} s", flush=True)  # slow runs show progress
    load = os.getloadavg()
    print(f"# {model.name}, tools {args.tools}, {args.threads} threads, {args.max_tokens} new tokens per step, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("step | prompt | computed on/off | share computed | TTFT on s | TTFT off s | TTFT on/off")
    for k, (on, off) in enumerate(zip(rows["on"], rows["off"]), 1):
        print(f"{k:4d} | {on[0]:6d} | {on[1]:6d} / {off[1]:5d} | {on[1] / on[0]:13.0%} | "
              f"{on[2]:9.2f} | {off[2]:10.2f} | {on[2] / off[2]:10.2f}")
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
