"""Prefill and decode tokens/s of the embedded model on CPU: our engine next to llama.cpp.

    python bench/cpu_decode.py                      # bf16, int8, int4 vs llama.cpp, 2 threads
    python bench/cpu_decode.py --variants int4,int4d --decode 16 --rounds 1

Both run the same GGUF (Qwen2.5-Coder-1.5B-Instruct Q4_K_M) on the same prompt token ids
(the hermes tool prompt, ~200 tokens), greedy, with the same thread count. Our engine
dequantizes the GGUF to fp32/bf16 (and re-quantizes to int8/int4 for those variants);
llama.cpp (the prebuilt `xllamacpp` wheel) runs the Q4_K/Q6_K weights directly. Each
backend runs `--rounds` times, interleaved, and the best round is kept: on a shared machine
that is the least disturbed measurement. The table puts the ratios to llama.cpp first, then
the speeds, the memory (weights as loaded, and the process's resident set after the backend
ran) and the path our prefill takes (`quant.choose_kernel` at the prompt's row count); the
machine load (`uptime`) is printed before and after the run.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

VARIANTS = {  # name: (float dtype, quantization, keep a dense copy for prefill)
    "fp32": ("float32", None, False),
    "bf16": ("bfloat16", None, False),
    "int8": ("bfloat16", "int8", False),
    "int4": ("bfloat16", "int4", False),
    # + lm_head quantized too (151936 x 1536: in bf16 it is ~470 MB read per decoded token)
    "int8h": ("bfloat16", {"bits": 8, "lm_head": True}, False),
    "int4h": ("bfloat16", {"bits": 4, "lm_head": True}, False),
    # int4 decode, prefill on a kept dense copy (`quant.keep_dense_weights`: memory for speed)
    "int4d": ("bfloat16", "int4", True),
}


def prompt_ids(ck) -> list[int]:
    from glm_agent.core.contracts import ToolSpec
    from glm_agent.core.messages import UserMessage
    from glm_agent.models.templates import ChatTemplate

    py = ToolSpec(
        name="python",
        description="Run Python code in a Jupyter kernel and return what it prints.",
        parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    )
    template = ChatTemplate(ck.chat_template, bos_token=ck.tokenizer.bos_token, eos_token=ck.tokenizer.eos_token)
    text = template.render([UserMessage(content="What is 123456789 * 987654321? Use python.")], [py])
    return ck.tokenizer.encode(text)


class Ours:
    def __init__(self, ck, variant: str):
        import torch

        from glm_agent.engine import quant as q
        from glm_agent.engine.engine import Engine

        dtype_name, quant, keep_dense = VARIANTS[variant]
        dtype = getattr(torch, dtype_name)
        if quant is not None:
            quant = q.normalize_quant(quant)
        t = time.perf_counter()
        self.engine = Engine.from_weights(ck.config, ck.weights(dtype), "cpu", dtype, quant=quant,
                                          max_context=4096)
        if keep_dense:
            q.keep_dense_weights(self.engine.model)
        self.load_s = time.perf_counter() - t
        self.name = f"ours {variant}"
        self.tokenizer = ck.tokenizer
        self._q = q

    def weight_mb(self) -> float:
        model = self.engine.model
        n = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
        return (n + self._q.dense_weight_bytes(model)) / 2**20

    def prefill_path(self, rows: int) -> str:
        import torch

        layer = next((m for m in self.engine.model.modules() if isinstance(m, self._q.QuantLinear)), None)
        if layer is None:
            return "dense"
        name = self._q.choose_kernel(layer, torch.device("cpu"), rows)
        if name != "dequant":
            return name
        return f"dense {str(self._q.dense_dtype('cpu')).removeprefix('torch.')}" + (
            " kept" if layer.keep_dense else " jit")

    def run(self, ids: list[int], n_decode: int) -> tuple[float, float, str]:
        e = self.engine
        sid = e.new_stream()
        try:
            t = time.perf_counter()
            logits = e.prefill(sid, ids)
            prefill = len(ids) / (time.perf_counter() - t)
            out = [int(logits.argmax())]
            t = time.perf_counter()
            for _ in range(n_decode - 1):
                logits = e.decode_step([sid], [out[-1]])[0]
                out.append(int(logits.argmax()))
            decode = (n_decode - 1) / (time.perf_counter() - t)
        finally:
            e.free(sid)
        return prefill, decode, self.tokenizer.decode(out)


class LlamaCpp:
    def __init__(self, path, threads: int):
        import xllamacpp as xlc

        p = xlc.CommonParams()
        p.model.path = str(path)
        p.n_ctx = 4096
        p.n_parallel = 1
        p.cpuparams.n_threads = threads
        p.cpuparams_batch.n_threads = threads
        t = time.perf_counter()
        self.server = xlc.Server(p)
        self.load_s = time.perf_counter() - t
        self.name = "llama.cpp (xllamacpp)"
        self.size_mb = os.path.getsize(path) / 2**20

    def weight_mb(self) -> float:
        return self.size_mb  # the GGUF's tensors, used as stored

    def prefill_path(self, rows: int) -> str:
        return "Q4_K/Q6_K"

    def run(self, ids: list[int], n_decode: int) -> tuple[float, float, str]:
        r = self.server.handle_completions({
            "prompt": ids, "n_predict": n_decode, "temperature": 0, "ignore_eos": True,
            "cache_prompt": False,
        })
        tm = r["timings"]
        return tm["prompt_per_second"], tm["predicted_per_second"], r["choices"][0]["text"]


def _common(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return f"{n} chars"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _uptime() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} on {os.cpu_count()} cores"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--variants", default="bf16,int8,int4",
                    help="of " + ",".join(VARIANTS) + " (h: lm_head quantized too; d: dense copy kept for prefill)")
    ap.add_argument("--decode", type=int, default=32, help="tokens to decode")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-llamacpp", action="store_true")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}: use {', '.join(VARIANTS)}")

    import torch

    from glm_agent.engine.loading import open_checkpoint

    start_load = _uptime()
    torch.set_num_threads(args.threads)
    ck = open_checkpoint(args.model)
    ids = prompt_ids(ck)
    rows = []

    def measure(backend) -> None:
        best = None
        for _ in range(args.rounds):
            p, d, text = backend.run(ids, args.decode)
            best = (p, d, text) if best is None else (max(best[0], p), max(best[1], d), best[2])
        rows.append((backend.name, backend.load_s, best[0], best[1], best[2], backend.weight_mb(), _rss_mb(),
                     backend.prefill_path(len(ids))))

    if not args.no_llamacpp:
        llama = LlamaCpp(ck.path, args.threads)
        measure(llama)
        del llama
        gc.collect()
    for v in variants:
        ours = Ours(ck, v)
        measure(ours)
        del ours
        gc.collect()

    ref = rows[0] if not args.no_llamacpp else None
    print(f"\n{ck.name}: {ck.details.get('model_name')} | prompt {len(ids)} tokens, decode {args.decode} "
          f"| {args.threads} threads | best of {args.rounds} | torch {torch.__version__} "
          f"| {platform.processor() or platform.machine()}, dense dtype {_dense_dtype_name()} "
          f"| {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"machine load: before {start_load}; after {_uptime()}")
    cols = [("backend", 22), ("prefill vs llama.cpp", 20), ("decode vs llama.cpp", 19), ("prefill tok/s", 13),
            ("decode tok/s", 12), ("weights MB", 10), ("RSS MB", 7), ("prefill path", 16), ("load s", 6),
            ("same text", 9)]
    print("| " + " | ".join(f"{c:<{w}}" if i == 0 else f"{c:>{w}}" for i, (c, w) in enumerate(cols)) + " |")
    print("|" + "|".join("-" * (w + 2) for _, w in cols) + "|")
    for name, load, p, d, text, wmb, rss, path in rows:
        pr = f"{p / ref[2]:.2f}x" if ref else "-"
        dr = f"{d / ref[3]:.2f}x" if ref else "-"
        same = "-" if not ref else ("yes" if text == ref[4] else _common(text, ref[4]))
        vals = [name, pr, dr, f"{p:.1f}", f"{d:.2f}", f"{wmb:.0f}", f"{rss:.0f}", path, f"{load:.1f}", same]
        print("| " + " | ".join(f"{v:<{w}}" if i == 0 else f"{v:>{w}}" for i, (v, (_, w)) in enumerate(zip(vals, cols)))
              + " |")
    if ref:
        print(f"\nllama.cpp text: {ref[4]!r}")


def _dense_dtype_name() -> str:
    from glm_agent.engine.quant import dense_dtype

    return str(dense_dtype("cpu")).removeprefix("torch.")


if __name__ == "__main__":
    main()
