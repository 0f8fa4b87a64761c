"""`Scheduler`: continuous batching over one engine, shared by every caller of a loaded model.

Requests join and leave the running batch at token granularity. Each step is ONE batched
`engine.step` over every running request: a decoding request feeds its last token, a request
still reading its prompt feeds the next chunk of it (chunked prefill), so a long prompt shares
steps with the others instead of freezing them. The step's token budget (`step_tokens`) goes
to decode rows first, then to prompt chunks in arrival order.

- Admission is first come, first served (no request is skipped, so none starves), while fewer
  than `max_batch` run and the pool has room for the request's prompt. A new request starts
  from the cached blocks of its prompt's longest cached prefix (`PagedKVCache.attach_prefix`):
  it computes only the rest, and `Generation.cached_tokens` says how many ids it reused.
- Each request has its own sampler and stop ids; a stop id is delivered last, exactly like
  `Engine.generate`, which a greedy request here reproduces token for token.
- `Generation.close()` (or leaving the iterator) cancels the request and frees its blocks as
  soon as the step in flight ends.
- A pool too full for the next step preempts the most recently admitted request: its blocks
  are freed (its full ones stay cached) and it waits in front of the line to be recomputed,
  so a full cache costs time, never an error. Only a request that cannot fit alone fails.
- `exclusive()` holds the engine between two steps, for a caller that drives it directly
  (APAR's tree of streams); the batch waits meanwhile.

The scheduler thread starts with the first request and ends when nothing is left to do.

    sched = Scheduler(engine, max_batch=16, step_tokens=None)   # None: 256 on CPU, 2048 on CUDA
    gen = sched.submit(prompt_ids, max_new_tokens, SamplingParams(...), stop_token_ids={eos})
    for tok in gen: ...            # blocks for each token; gen.cached_tokens, gen.finish_reason
    gen.close()                    # cancel (idempotent)
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from glm_agent.engine.errors import CacheExhaustedError
from glm_agent.engine.params import SamplingParams

if TYPE_CHECKING:
    import torch

__all__ = ["Scheduler", "Generation", "LogitsProcessor"]

# (tokens generated so far, next-token logits [vocab]) -> logits to sample from.
LogitsProcessor = Callable[[list, "torch.Tensor"], "torch.Tensor"]

_DONE = object()


class Generation:
    """One request: iterate it for its token ids; `close()` cancels it."""

    def __init__(self, scheduler: "Scheduler", prompt: list[int], max_new_tokens: int, sampler, stops,
                 logits_processor: "LogitsProcessor | None" = None):
        self.prompt = prompt
        self.logits_processor = logits_processor
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.stops = stops
        self.tokens: list[int] = []  # generated so far
        self.ids = list(prompt)  # prompt + tokens: what the stream holds before the next sample
        self.cached_tokens = 0  # prompt ids reused from the prefix cache (first admission)
        self.finish_reason: str | None = None  # "stop" | "length" | "cancelled" | "error"
        self.preemptions = 0
        self._scheduler = scheduler
        self._stream: int | None = None
        self._fed = 0  # ids of prompt + tokens already in the stream's cache
        self._admitted = False
        self._out: queue.SimpleQueue = queue.SimpleQueue()

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        item = self._out.get()
        if item is _DONE:
            self._out.put(_DONE)  # iterating again stays finished
            raise StopIteration
        if isinstance(item, BaseException):
            self._out.put(_DONE)
            raise item
        return item

    def close(self) -> None:
        """Cancel: the request leaves the batch and its blocks are freed before this returns
        (at most one step from now)."""
        if self.finish_reason is None:
            self._scheduler._cancel(self)


class Scheduler:
    """Continuous batching over `engine` (see the module docstring).

    on_step(batch): called after each step with `[(generation, n_ids_fed)]`, for tests/tracing.
    """

    def __init__(
        self,
        engine,
        *,
        max_batch: int = 16,
        step_tokens: int | None = None,
        on_step: Callable[[list[tuple[Generation, int]]], None] | None = None,
    ) -> None:
        if step_tokens is None:
            # A CPU step is compute-bound: small chunks keep decode rows moving. A GPU step is
            # launch-bound: bigger chunks end prompts sooner at almost no cost to the decoders.
            step_tokens = 2048 if engine.device.type == "cuda" else 256
        if max_batch < 1 or step_tokens < max_batch:
            raise ValueError("max_batch must be >= 1 and step_tokens >= max_batch")
        self.engine = engine
        self.max_batch = max_batch
        self.step_tokens = step_tokens
        self.on_step = on_step
        self.steps = 0
        self._waiting: deque[Generation] = deque()
        self._running: list[Generation] = []  # in admission order
        self._cv = threading.Condition()  # guards _waiting and _thread
        self._engine_lock = threading.RLock()  # held for each step and by exclusive()
        self._thread: threading.Thread | None = None
        self._waiters = 0  # threads waiting for the engine: the loop lets them in first

    # ---- public -------------------------------------------------------------------------------
    def submit(
        self,
        prompt_ids: Iterable[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        stop_token_ids: Iterable[int] = (),
        logits_processor: "LogitsProcessor | None" = None,
    ) -> Generation:
        """Queue a request; errors in the arguments raise here, before any work.

        logits_processor(tokens_so_far, logits) -> logits: called on this request's logits
        before each sample (e.g. a grammar's allowed-token mask); an error in it ends only this
        request. None (default) costs nothing."""
        from glm_agent.engine.sampling import Sampler

        engine = self.engine
        prompt = engine.check_request(prompt_ids, max_new_tokens)
        sampler = Sampler(sampling, engine.vocab_size, engine.device)
        sampler.observe(prompt)
        gen = Generation(self, prompt, max_new_tokens, sampler, frozenset(stop_token_ids), logits_processor)
        if max_new_tokens == 0:
            gen.finish_reason = "length"
            gen._out.put(_DONE)
            return gen
        with self._cv:
            self._waiting.append(gen)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="glm-agent-scheduler", daemon=True)
                self._thread.start()
        return gen

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the engine between two steps (the batch pauses until the block ends)."""
        with self._cv:
            self._waiters += 1
        try:
            self._engine_lock.acquire()
        finally:
            with self._cv:
                self._waiters -= 1
        try:
            yield
        finally:
            self._engine_lock.release()

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        """Cancel every request and wait for the scheduler thread to end."""
        with self._cv:
            pending = list(self._waiting) + list(self._running)
        for gen in pending:
            gen.close()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # ---- the loop -----------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cv:
                if not self._waiting and not self._running:
                    self._thread = None
                    return
            while self._waiters:  # Python locks are not fair: step aside explicitly
                time.sleep(0.0005)
            with self._engine_lock:
                try:
                    self._step()
                except BaseException as exc:  # noqa: BLE001 - delivered to every caller
                    for gen in list(self._running):
                        self._finish(gen, "error", exc)
                    if not isinstance(exc, Exception):
                        with self._cv:
                            self._thread = None
                        raise

    def _step(self) -> None:
        self._admit()
        batch = self._plan()
        if not batch:
            return
        engine = self.engine
        logits = engine.step([g._stream for g, _ in batch], [g.ids[g._fed : g._fed + n] for g, n in batch])
        self.steps += 1
        for i, (gen, n) in enumerate(batch):
            gen._fed += n
            if gen._fed < len(gen.ids):
                continue  # more prompt to read
            row = logits[i]
            if gen.logits_processor is not None:
                try:
                    row = gen.logits_processor(gen.tokens, row)
                except Exception as exc:  # noqa: BLE001 - the caller's hook fails its own request only
                    self._finish(gen, "error", exc)
                    continue
            tok = gen.sampler.sample(row)
            gen.tokens.append(tok)
            gen.ids.append(tok)
            gen._out.put(tok)
            if tok in gen.stops:
                self._finish(gen, "stop")
            elif len(gen.tokens) >= gen.max_new_tokens:
                self._finish(gen, "length")
        if self.on_step is not None:
            self.on_step(batch)

    def _admit(self) -> None:
        cache = self.engine.cache
        bm = cache.block_manager
        while len(self._running) < self.max_batch:
            with self._cv:
                if not self._waiting:
                    return
                gen = self._waiting[0]
            stream = cache.new_stream()
            cached = cache.attach_prefix(stream, gen.ids)
            need = bm.blocks_needed(stream, len(gen.ids) - cached + 1)
            if need > bm.num_free_blocks:
                cache.free(stream)  # its attached blocks go back to the cache
                if not self._running:  # alone and still too big: it never fits
                    with self._cv:
                        self._waiting.popleft()
                    self._finish(gen, "error", CacheExhaustedError(
                        f"KV cache full: a prompt of {len(gen.ids)} tokens needs {need} blocks but the "
                        f"pool has {bm.num_free_blocks} free; build the engine with a larger cache_tokens"))
                    continue
                return  # first come, first served: wait for room rather than skip ahead
            with self._cv:
                self._waiting.popleft()
            gen._stream, gen._fed = stream, cached
            if not gen._admitted:
                gen._admitted = True
                gen.cached_tokens = cached
            self._running.append(gen)

    def _plan(self) -> list[tuple[Generation, int]]:
        """Who feeds how many ids this step; preempts the newest requests while it cannot fit."""
        bm = self.engine.cache.block_manager
        while self._running:
            budget = self.step_tokens
            batch = []
            decoding = [g for g in self._running if len(g.ids) - g._fed == 1]
            reading = [g for g in self._running if len(g.ids) - g._fed > 1]
            for gen in decoding:
                batch.append((gen, 1))
                budget -= 1
            # Prompts share what is left: shortest rest first, none more than an equal share,
            # so a short prompt is not stuck behind a long one and a long one still advances.
            reading.sort(key=lambda g: len(g.ids) - g._fed)
            for i, gen in enumerate(reading):
                n = min(len(gen.ids) - gen._fed, budget // (len(reading) - i))
                if n > 0:
                    batch.append((gen, n))
                    budget -= n
            need = sum(bm.blocks_needed(g._stream, n) for g, n in batch)
            if need <= bm.num_free_blocks:
                return batch
            victim = self._running[-1]
            if len(self._running) == 1:
                self._finish(victim, "error", CacheExhaustedError(
                    f"KV cache full: one request of {len(victim.ids)} tokens fills the whole pool; "
                    "lower max_new_tokens or build the engine with a larger cache_tokens"))
                return []
            self._preempt(victim)
        return []

    def _preempt(self, gen: Generation) -> None:
        self._running.remove(gen)
        self.engine.cache.free(gen._stream)  # full blocks stay cached: recomputation may hit
        gen._stream, gen._fed = None, 0
        gen.preemptions += 1
        with self._cv:
            self._waiting.appendleft(gen)

    def _finish(self, gen: Generation, reason: str, error: BaseException | None = None) -> None:
        if gen.finish_reason is not None:
            return
        gen.finish_reason = reason
        if gen in self._running:
            self._running.remove(gen)
        if gen._stream is not None:
            self.engine.cache.free(gen._stream)
            gen._stream = None
        gen._out.put(error if error is not None else _DONE)

    def _cancel(self, gen: Generation) -> None:
        with self.exclusive():  # between two steps: the stream is not in a forward
            with self._cv:
                if gen in self._waiting:
                    self._waiting.remove(gen)
            self._finish(gen, "cancelled")
