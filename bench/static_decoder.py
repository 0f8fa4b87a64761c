"""Experiment: static-shape decoding for the GPU, a preallocated KV cache and a captured decode step.

Not part of the package: `glm_agent.engine` has one decode path (the paged KV cache). This is
what `bench/gpu_decode.py` times, to see how far CUDA graphs / `torch.compile` take batch-1
decoding. `python bench/static_decoder.py` checks it: eager decode equals the engine's greedy
tokens and rejects what its fixed shapes cannot hold (any device); on CUDA, graph and compiled
decode equal eager decode.

At batch 1 a 40-layer decoder launches ~15 kernels per layer; eager PyTorch spends more time in
Python and launches than the GPU spends reading weights. Capturing one decode step as a CUDA
graph (or compiling it with `torch.compile(mode="reduce-overhead")`) replays all of it with one
launch. Graphs need every shape and address fixed, so this module keeps:

- `StaticKVCache`: `[batch, kv_heads, slots, head_dim]` per layer, allocated once, with
  slots = max_context + 1 rounded up to 16. Row b of the batch is one stream; the last slot is a
  scratch slot that idle rows (and the capture warm-up) write to, so they never disturb a stream.
- `StaticDecoder`: wraps the engine's `Decoder` unchanged. The decoder's attention calls
  `cache.write(layer, slots, k, v)` and `cache.attend(layer, q, batch)`; this cache answers
  those calls with static shapes, so the same layer code (and the same `QuantLinear`s) run in
  the graph. Prefill is not captured (its length varies): it runs eagerly through SDPA with
  `is_causal` (flash attention on CUDA) over the stream's own row.

Decode attention handles GQA without repeating keys: the query heads of one KV group become
the rows of an SDPA call over that group's keys (as `kv_cache.PagedKVCache` does); a key mask
hides slots past each row's position. It reads the whole static context every step, which is
why `max_context` should be what the workload needs, not the model's maximum.

Modes: "eager" (any device; the reference), "graph" (torch.cuda.CUDAGraph of the eager step),
"compile" (torch.compile reduce-overhead; Inductor fuses int8 dequantization into the GEMV, so
int8 is fast only in this mode).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from glm_agent.engine.quant import prepare_quantized  # noqa: E402  (the repository is on sys.path)

__all__ = ["StaticKVCache", "StaticBatch", "StaticDecoder", "StaticDecodeError"]


class StaticDecodeError(RuntimeError):
    """The static decoder was asked for something its fixed shapes cannot hold."""


@dataclass
class StaticBatch:
    """What one forward tells the static cache: which rows, positions; prefill or decode."""

    rows: torch.Tensor  # [N] batch row (stream) of each new token
    positions: torch.Tensor  # [N] position = cache slot of each new token
    decode: bool  # True: one token per row, all rows; False: one row's chunk of tokens
    row: int = 0  # prefill only
    start: int = 0  # prefill only: tokens already cached in that row

    @property
    def slots(self) -> torch.Tensor:  # the name the decoder passes to cache.write
        return self.positions


class StaticKVCache:
    def __init__(self, num_layers: int, batch_size: int, num_kv_heads: int, head_dim: int,
                 max_context: int, *, device, dtype) -> None:
        self.max_context = max_context
        self.num_kv_heads = num_kv_heads
        # >= max_context + 1 slots (the last is the scratch slot), rounded up to 16 so the key
        # mask's last dimension is aligned for the memory-efficient SDPA kernel.
        self.num_slots = -(-(max_context + 1) // 16) * 16
        self.scratch = self.num_slots - 1
        shape = (num_layers, batch_size, num_kv_heads, self.num_slots, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self._current: StaticBatch | None = None
        self._slot_ids = torch.arange(self.num_slots, device=device)  # for decode key masks

    @property
    def memory_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        batch = self._current
        # k [N, kv_heads, D] -> cache[layer, row, :, pos, :]; index_put is capturable.
        self.k[layer][batch.rows, :, batch.positions] = k.to(self.k.dtype)
        self.v[layer][batch.rows, :, batch.positions] = v.to(self.v.dtype)

    def attend(self, layer: int, q: torch.Tensor, batch: StaticBatch) -> torch.Tensor:
        n, heads, d = q.shape
        hk = self.num_kv_heads
        if batch.decode:
            k, v = self.k[layer], self.v[layer]  # [B, hk, S+1, D]
            mask = (self._slot_ids[None, :] <= batch.positions[:, None])[:, None, None, :]
            qg = q.view(n, hk, heads // hk, d)  # a group's query heads as rows: no key repeat
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=mask)
            return out.reshape(n, heads, d)
        end = batch.start + n
        k = self.k[layer, batch.row : batch.row + 1, :, :end]
        v = self.v[layer, batch.row : batch.row + 1, :, :end]
        qs = q.transpose(0, 1)[None]  # [1, H, n, D]
        if batch.start == 0:
            out = F.scaled_dot_product_attention(qs, k, v, is_causal=True, enable_gqa=True)
        else:  # a chunk after cached tokens: query i sees keys <= start + i
            mask = torch.arange(end, device=q.device)[None, :] <= (
                batch.start + torch.arange(n, device=q.device)[:, None]
            )
            out = F.scaled_dot_product_attention(qs, k, v, attn_mask=mask, enable_gqa=True)
        return out[0].transpose(0, 1)


class StaticDecoder:
    """Batch-`batch_size` decoding of the engine's `Decoder` with a static cache and a captured step.

        sd = StaticDecoder(engine.model, batch_size=1, max_context=4096, mode="graph")
        logits = sd.prefill(0, prompt_ids)                  # [vocab], eager
        logits = sd.decode([tok])                           # [B, vocab], one graph replay
        ids = sd.generate_greedy([prompt_ids], 64)          # convenience loop

    Rows are streams; `lengths[r]` is how many tokens row r holds. `decode` takes one token per
    row (pass None for an idle row: it writes to the scratch slot and its logits are junk).
    """

    def __init__(self, model, *, batch_size: int = 1, max_context: int = 4096, mode: str = "graph",
                 device=None, dtype=None) -> None:
        if mode not in ("eager", "graph", "compile"):
            raise StaticDecodeError(f"mode must be 'eager', 'graph' or 'compile', got {mode!r}")
        param = next(model.parameters())
        self.device = torch.device(device) if device is not None else param.device
        self.dtype = dtype or model.embed.weight.dtype
        if mode == "graph" and self.device.type != "cuda":
            raise StaticDecodeError("mode='graph' needs a CUDA device; use mode='eager' on CPU")
        cfg = model.config
        self.model, self.config, self.mode = model, cfg, mode
        self.batch_size, self.max_context = batch_size, max_context
        self.cache = StaticKVCache(cfg.num_layers, batch_size, cfg.num_kv_heads, cfg.head_dim,
                                   max_context, device=self.device, dtype=self.dtype)
        if model.cos is None or model.cos.shape[0] < self.cache.num_slots:
            model.init_rope(self.cache.num_slots, self.device)  # the scratch slot needs a position too
        self.lengths = [0] * batch_size
        # Static inputs of the decode step: their addresses are baked into the graph.
        self._ids = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self._pos = torch.full((batch_size,), self.cache.scratch, dtype=torch.long, device=self.device)
        self._batch = StaticBatch(torch.arange(batch_size, device=self.device), self._pos, decode=True)
        self._graph = None
        self._out = None
        self._compiled = None
        with torch.inference_mode():
            prepare_quantized(model, self.device, rows=(batch_size,), dtype=self.dtype)
        if mode == "compile" and self.device.type == "cuda":
            self._mark_static()

    def _mark_static(self) -> None:
        """cudagraph trees copy every non-static input into the graph's pool on each replay and
        refuse graphs that mutate such inputs: mark the cache, the step inputs, the RoPE tables
        and the packed quantized weights (plain attributes, not buffers) as static."""
        import torch._dynamo as dynamo

        from glm_agent.engine.quant import QuantLinear

        for name in ("recompile_limit", "cache_size_limit"):  # one graph per StaticDecoder instance
            if hasattr(dynamo.config, name):
                setattr(dynamo.config, name, max(getattr(dynamo.config, name), 64))
        tensors = [self.cache.k, self.cache.v, self.cache._slot_ids, self._ids, self._pos, self._batch.rows,
                   self.model.cos, self.model.sin]
        for m in self.model.modules():
            if isinstance(m, QuantLinear):
                for packed in m._packed.values():
                    tensors += [t for t in (packed if isinstance(packed, tuple) else (packed,))
                                if isinstance(t, torch.Tensor)]
        for t in tensors:
            dynamo.mark_static_address(t)

    # ---- the step ---------------------------------------------------------------------

    def _step(self) -> torch.Tensor:
        self.cache._current = self._batch
        return self.model(self._ids, self._pos, self.cache, self._batch)

    def _run_step(self) -> torch.Tensor:
        if self.mode == "eager":
            return self._step()
        if self.mode == "compile":
            if self._compiled is None:
                import torch._inductor.config as inductor_config

                # Matrix-vector products reach peak bandwidth only with coordinate-descent
                # tuning (a comment in torch/_inductor/decomposition.py says so).
                inductor_config.coordinate_descent_tuning = True
                self._compiled = torch.compile(self._step, mode="reduce-overhead", fullgraph=True)
            if self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return self._compiled()
        if self._graph is None:
            self._capture()
        self._graph.replay()
        return self._out

    def _capture(self) -> None:
        saved_ids, saved_pos = self._ids.clone(), self._pos.clone()
        self._pos.fill_(self.cache.scratch)  # warm-up writes go to the scratch slot only
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # first calls allocate workspaces (cuBLAS, packing)
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._out = self._step()
        self._graph = graph
        self._ids.copy_(saved_ids)
        self._pos.copy_(saved_pos)

    # ---- public API -------------------------------------------------------------------

    def reset(self, row: int | None = None) -> None:
        """Forget row `row` (or all rows); the cache memory stays allocated."""
        for r in range(self.batch_size) if row is None else [row]:
            self.lengths[r] = 0

    def prefill(self, row: int, ids, chunk: int = 2048) -> torch.Tensor:
        """Append `ids` to row `row` (eager, SDPA); return the logits after the last id."""
        if not 0 <= row < self.batch_size:
            raise StaticDecodeError(f"row {row} out of range for batch size {self.batch_size}")
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).flatten()
        if ids.numel() == 0:
            raise StaticDecodeError("prefill needs at least one token id")
        if self.lengths[row] + ids.numel() > self.max_context:
            raise StaticDecodeError(
                f"row {row} would hold {self.lengths[row] + ids.numel()} tokens, more than "
                f"max_context={self.max_context}; build the StaticDecoder with a larger max_context"
            )
        logits = None
        with torch.inference_mode():
            for i in range(0, ids.numel(), chunk):
                part = ids[i : i + chunk]
                start = self.lengths[row]
                pos = torch.arange(start, start + part.numel(), device=self.device)
                batch = StaticBatch(torch.full_like(pos, row), pos, decode=False, row=row, start=start)
                self.cache._current = batch
                last = torch.tensor([part.numel() - 1], device=self.device)
                logits = self.model(part, pos, self.cache, batch, logits_at=last)
                self.lengths[row] += part.numel()
        return logits[0]

    def decode(self, tokens) -> torch.Tensor:
        """One token per row (None = idle row) -> logits `[batch_size, vocab]` (a fresh copy)."""
        if len(tokens) != self.batch_size:
            raise StaticDecodeError(f"decode needs {self.batch_size} tokens (one per row), got {len(tokens)}")
        pos = []
        for r, t in enumerate(tokens):
            if t is None:
                pos.append(self.cache.scratch)
            elif self.lengths[r] >= self.max_context:
                raise StaticDecodeError(f"row {r} is full ({self.max_context} tokens); raise max_context")
            else:
                pos.append(self.lengths[r])
        self._ids.copy_(torch.tensor([0 if t is None else int(t) for t in tokens]))
        self._pos.copy_(torch.tensor(pos))
        with torch.inference_mode():
            out = self._run_step().clone()
        for r, t in enumerate(tokens):
            if t is not None:
                self.lengths[r] += 1
        return out

    def generate_greedy(self, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
        """Greedy continuation of one prompt per row (all rows decode together)."""
        if len(prompts) != self.batch_size:
            raise StaticDecodeError(f"need {self.batch_size} prompts, got {len(prompts)}")
        self.reset()
        nxt = [int(self.prefill(r, p).argmax()) for r, p in enumerate(prompts)]
        outs = [[t] for t in nxt]
        for _ in range(max_new_tokens - 1):
            nxt = self.decode(nxt).argmax(-1).tolist()
            for o, t in zip(outs, nxt):
                o.append(t)
        return outs


# ---------------------------------------------------------------------------- self-check


def _engine(quant, device, dtype):
    """The engine around a small random GLM-4-shaped decoder (bench/_random_glm.py)."""
    from _random_glm import SMALL, random_decoder

    from glm_agent.engine.engine import Engine

    config, model = random_decoder(dict(SMALL, num_layers=2), dtype, torch.device(device), quant)
    return Engine(model, config, device=device, dtype=dtype, max_context=128)


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _expect_error(match: str, fn) -> None:
    try:
        fn()
    except StaticDecodeError as e:
        assert match in str(e), (match, str(e))
    else:
        raise AssertionError(f"no StaticDecodeError ({match!r})")


def check() -> None:
    """What the tests checked when this lived in the package (see the module docstring)."""
    quants = [None, {"bits": 8}, {"bits": 4, "group_size": 32}]
    prompts = [[5, 17, 200, 3, 99], [7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9], [42]]
    for quant in quants:
        eng = _engine(quant, "cpu", torch.float32)
        want = [list(eng.generate(p, 12)) for p in prompts]
        assert len({t for w in want for t in w}) > 4, want  # not a degenerate constant output
        sd = StaticDecoder(eng.model, batch_size=len(prompts), max_context=32, mode="eager")
        assert sd.generate_greedy(prompts, 12) == want, quant
        sd.reset()  # an idle row (None) leaves the other rows' results unchanged
        first = [int(sd.prefill(r, p).argmax()) for r, p in enumerate(prompts)]
        logits = sd.decode([first[0], None, first[2], None])
        assert int(logits[0].argmax()) == want[0][1] and int(logits[2].argmax()) == want[2][1]
    print("eager static decode == engine greedy decode (cpu; float, int8, int4): ok")

    eng = _engine(None, "cpu", torch.float32)
    if not torch.cuda.is_available():
        _expect_error("needs a CUDA device", lambda: StaticDecoder(eng.model, mode="graph"))
    _expect_error("mode must be", lambda: StaticDecoder(eng.model, mode="fast"))
    sd = StaticDecoder(eng.model, batch_size=1, max_context=8, mode="eager")
    _expect_error("larger max_context", lambda: sd.prefill(0, list(range(9))))
    assert sd.lengths == [0]  # the refused prefill wrote nothing
    sd.prefill(0, list(range(8)))
    _expect_error("row 0 is full", lambda: sd.decode([3]))
    _expect_error("one per row", lambda: sd.decode([3, 4]))
    print("fixed-shape limits raise StaticDecodeError: ok")

    if not torch.cuda.is_available():
        print("no CUDA device: graph and compile modes not checked")
        return
    for quant in quants:
        eng = _engine(quant, "cuda", torch.bfloat16)
        eager = StaticDecoder(eng.model, batch_size=4, max_context=48, mode="eager")
        graph = StaticDecoder(eng.model, batch_size=4, max_context=48, mode="graph")
        assert graph.generate_greedy(prompts, 16) == eager.generate_greedy(prompts, 16), quant
        for sd in (eager, graph):
            sd.reset()
            for r, p in enumerate(prompts):
                sd.prefill(r, p)
        step = [3, 4, 5, 6]
        assert _rel(graph.decode(step), eager.decode(step)) < 1e-2, quant
    print("CUDA-graph decode == eager decode (bf16/int8/int4): ok")
    for quant in (None, {"bits": 8}):
        eng = _engine(quant, "cuda", torch.bfloat16)
        eager = StaticDecoder(eng.model, batch_size=1, max_context=32, mode="eager")
        comp = StaticDecoder(eng.model, batch_size=1, max_context=32, mode="compile")
        assert comp.generate_greedy(prompts[:1], 8) == eager.generate_greedy(prompts[:1], 8), quant
    print("compiled decode == eager decode (bf16/int8): ok")


if __name__ == "__main__":
    check()
