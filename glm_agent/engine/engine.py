"""`Engine`: the decoder, its paged KV cache, device and dtype, and token-level generation.

The engine speaks token ids only: chat templates and dialects live above it (glm_agent.models).

    engine = Engine.from_weights(config, weights, device="cpu", dtype=torch.float32,
                                 quant=None, max_context=None, cache_tokens=None,
                                 prefix_cache=True, cuda_graphs=None)
    for tok in engine.generate(prompt_ids, max_new_tokens=256, sampling=SamplingParams(...),
                               stop_token_ids={eos}):
        ...   # new ids one at a time; a stop token is yielded last, then the stream ends

Prefix caching (on by default, `prefix_cache=False` to turn it off): full KV blocks are indexed
by their token prefix, so a prompt that starts like an earlier one (the next step of an agent,
another request with the same system prompt) computes only what is new; see `blocks.py`. The
scheduler (`scheduler.py`) reuses them; `generate` always computes the whole prompt, so timing
it measures prefill.

Loading streams: the model is built on the `meta` device (no memory), then each incoming
tensor is cast/moved and put in place, so a checkpoint is never held twice. With `quant`
({"bits": 4|8, "group_size": 128, ...}) each layer is quantized by
`glm_agent.engine.quant.quantize_linears(layer, quant)` as soon as its last tensor arrived;
with `config.quant` set (a pre-quantized checkpoint) the linears are swapped first with
`quantize_linears(model, config.quant, empty=True)` so the stored tensors load directly.

Step API (used by `generate`, APAR and servers; every stream lives in `engine.cache`):
    sid = engine.new_stream(); child = engine.fork(sid); engine.free(sid)
    engine.prefill(sid, ids: list[int]) -> Tensor[vocab]          logits after the last id
    engine.decode_step(sids: list[int], last_tokens: list[int]) -> Tensor[B, vocab]
    engine.step(sids: list[int], ids: list[list[int]]) -> Tensor[B, vocab]   (general form)
    engine.forward_logits(ids: list[int]) -> Tensor[T, vocab]    full-sequence scoring, no cache
Logits are float32 on the engine's device. A stream that would grow past `max_context` raises
`ContextOverflowError`; a full KV cache raises `CacheExhaustedError` (both `EngineError`s).
On CUDA, decode steps (one new token per stream) replay captured CUDA graphs over the same paged
cache (`cuda_graphs.py`; `cuda_graphs=False` turns them off); prefill and mixed steps run eagerly.
An engine is not thread-safe: one caller (thread) drives it at a time. Concurrent requests go
through one `scheduler.Scheduler`, which batches them (continuous batching).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import torch
from torch import nn

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.decoder import Decoder
from glm_agent.engine.errors import CheckpointError, ContextOverflowError
from glm_agent.engine.kv_cache import PagedKVCache
from glm_agent.engine.params import SamplingParams, check_max_new_tokens
from glm_agent.engine.sampling import Sampler

__all__ = ["Engine"]

_PREFILL_CHUNK = 1024  # long prompts are prefilled in chunks to bound activation memory


def _set_tensor(model: nn.Module, name: str, value: torch.Tensor) -> None:
    path, _, attr = name.rpartition(".")
    mod = model.get_submodule(path) if path else model
    if attr in mod._parameters:
        mod._parameters[attr] = nn.Parameter(value, requires_grad=False)
    else:
        mod._buffers[attr] = value


class Engine:
    def __init__(
        self,
        model: Decoder,
        config: ModelConfig,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        max_context: int | None = None,
        cache_tokens: int | None = None,
        block_size: int = 16,
        prefix_cache: bool = True,
        cuda_graphs: bool | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_context = int(max_context or config.max_position)
        # Room for the longest single request plus forks/concurrent streams; the pool only
        # allocates memory as it fills, so a generous cap costs nothing up front.
        cache_tokens = int(cache_tokens or 2 * self.max_context)
        self.cache = PagedKVCache(
            config.num_layers,
            config.num_kv_heads,
            config.head_dim,
            max_blocks=-(-cache_tokens // block_size),
            block_size=block_size,
            device=self.device,
            dtype=dtype,
            prefix_cache=prefix_cache,
        )
        # A token's position is its depth in its own stream (forks included): < max_context.
        model.init_rope(self.max_context, self.device)
        if cuda_graphs is None:
            cuda_graphs = self.device.type == "cuda"
        self.graphs = None  # decode steps on CUDA replay captured graphs (cuda_graphs.py)
        if cuda_graphs:
            from glm_agent.engine.cuda_graphs import DecodeGraphs

            self.graphs = DecodeGraphs(model, self.cache, max_context=self.max_context)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    # ---- construction -------------------------------------------------------------------

    @classmethod
    def from_weights(
        cls,
        config: ModelConfig,
        weights: Iterable[tuple[str, torch.Tensor]],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        quant: dict | str | int | None = None,
        max_context: int | None = None,
        cache_tokens: int | None = None,
        block_size: int = 16,
        prefix_cache: bool = True,
        cuda_graphs: bool | None = None,
    ) -> "Engine":
        """Build the decoder and fill it tensor by tensor from `(canonical_name, tensor)`."""
        device = torch.device(device)
        if quant is not None and not isinstance(quant, dict):  # "int4", 8, ... as normalize_quant accepts
            from glm_agent.engine.quant import normalize_quant

            quant = normalize_quant(quant)
        if quant is not None and config.quant is not None:
            raise ValueError("this checkpoint is already quantized (config.quant); drop quant=")
        if quant is not None or config.quant is not None:  # quant code loads only when used
            from glm_agent.engine.quant import quantize_linears
        with torch.device("meta"):
            model = Decoder(config).to(dtype)
            if config.quant is not None:
                quantize_linears(model, config.quant, empty=True)

        expected = dict(model.named_parameters())
        expected.update(model.named_buffers())
        if config.tie_embeddings:
            expected.pop("lm_head.weight", None)
        pending: dict[int, set[str]] = {}
        for name in expected:
            if name.startswith("layers."):
                pending.setdefault(int(name.split(".")[1]), set()).add(name)
        loaded: set[str] = set()

        for name, tensor in weights:
            if name == "lm_head.weight" and config.tie_embeddings:
                continue  # some tied checkpoints store the copy anyway; embed.weight is used
            target = expected.pop(name, None)
            if target is None:
                if name in loaded:
                    raise CheckpointError(f"tensor {name!r} appears twice in the checkpoint")
                raise CheckpointError(
                    f"unexpected tensor {name!r} for a {config.arch} model with "
                    f"{config.num_layers} layers (config and weights disagree?)"
                )
            if tuple(tensor.shape) != tuple(target.shape):
                raise CheckpointError(
                    f"shape mismatch for {name}: expected {tuple(target.shape)} from the "
                    f"config, got {tuple(tensor.shape)} in the checkpoint"
                )
            want = target.dtype if tensor.is_floating_point() and target.is_floating_point() else tensor.dtype
            _set_tensor(model, name, tensor.to(device=device, dtype=want).contiguous())
            loaded.add(name)
            if name.startswith("layers."):
                i = int(name.split(".")[1])
                left = pending[i]
                left.discard(name)
                if not left and quant is not None:
                    quantize_linears(model.layers[i], quant)
        if expected:
            names = sorted(expected)
            more = f" (+{len(names) - 8} more)" if len(names) > 8 else ""
            raise CheckpointError(
                f"checkpoint is missing {len(names)} tensors: {', '.join(names[:8])}{more}"
            )
        if config.tie_embeddings:
            model.lm_head.weight = model.embed.weight
        if isinstance(quant, dict) and quant.get("lm_head"):
            quantize_linears(model, quant)  # only lm_head is still a float nn.Linear here
        model.eval()
        return cls(
            model,
            config,
            device=device,
            dtype=dtype,
            max_context=max_context,
            cache_tokens=cache_tokens,
            block_size=block_size,
            prefix_cache=prefix_cache,
            cuda_graphs=cuda_graphs,
        )

    # ---- streams ------------------------------------------------------------------------

    def new_stream(self) -> int:
        return self.cache.new_stream()

    def fork(self, stream: int) -> int:
        return self.cache.fork(stream)

    def free(self, stream: int) -> None:
        self.cache.free(stream)

    # ---- forward passes -----------------------------------------------------------------

    def _check_ids(self, ids: list[int]) -> None:
        v = self.config.vocab_size
        bad = [t for t in ids if not 0 <= t < v]
        if bad:
            raise ValueError(f"token ids out of range for vocab size {v}: {bad[:5]}")

    def step(self, streams: list[int], ids: list[list[int]]) -> torch.Tensor:
        """Append `ids[i]` to stream i (all at once) and return each stream's last logits."""
        if not streams or any(not x for x in ids):
            raise ValueError("step() needs at least one stream and one id per stream")
        flat = [t for x in ids for t in x]
        self._check_ids(flat)
        for s, x in zip(streams, ids):
            end = self.cache.length(s) + len(x)
            if end > self.max_context:
                raise ContextOverflowError(
                    f"stream {s} would reach {end} tokens, beyond the model's context of "
                    f"{self.max_context}; free it or start a shorter one"
                )
        graphs = self.graphs
        captured = graphs is not None and len(flat) == len(streams) and len(streams) <= graphs.max_batch
        with torch.inference_mode():
            if captured:  # a decode step: one token per stream
                positions, slots = self.cache.reserve(streams, [1] * len(streams), [list(x) for x in ids])
            else:
                batch = self.cache.plan(streams, [len(x) for x in ids], [list(x) for x in ids])
            try:
                if captured:
                    tables = [self.cache.block_manager.table(s) for s in streams]
                    logits = graphs.run(flat, positions, slots, [t.blocks for t in tables],
                                        [t.length for t in tables])
                    # The graph's output buffer is overwritten by the next replay.
                    return logits.to(torch.float32, copy=True)
                last = torch.tensor(batch.q_lens, device=self.device).cumsum(0) - 1
                tokens = torch.tensor(flat, dtype=torch.long, device=self.device)
                logits = self.model(tokens, batch.positions, self.cache, batch, logits_at=last)
            except BaseException:
                for s in streams:  # blocks indexed by this step were not (all) written
                    self.cache.block_manager.forget(s)
                raise
        return logits.float()

    def prefill(self, stream: int, ids: list[int]) -> torch.Tensor:
        """Feed `ids` to `stream` (chunked for long prompts); logits after the last id."""
        logits = None
        for i in range(0, len(ids), _PREFILL_CHUNK):
            logits = self.step([stream], [ids[i : i + _PREFILL_CHUNK]])
        if logits is None:
            raise ValueError("prefill() needs at least one token id")
        return logits[0]

    def decode_step(self, streams: list[int], last_tokens: list[int]) -> torch.Tensor:
        """One new token per live stream, decoded as one batch: logits `[B, vocab]`."""
        return self.step(streams, [[t] for t in last_tokens])

    def forward_logits(self, ids: list[int]) -> torch.Tensor:
        """Logits `[T, vocab]` at every position of one sequence (no cache involved)."""
        if not ids:
            raise ValueError("forward_logits() needs at least one token id")
        self._check_ids(ids)
        if len(ids) > self.max_context:
            raise ContextOverflowError(
                f"{len(ids)} tokens exceed the model's context of {self.max_context}"
            )
        with torch.inference_mode():
            tokens = torch.tensor(ids, dtype=torch.long, device=self.device)
            positions = torch.arange(len(ids), device=self.device)
            return self.model(tokens, positions).float()

    # ---- generation ---------------------------------------------------------------------

    def check_request(self, prompt_ids: Iterable[int], max_new_tokens: int, *, whole: bool = True) -> list[int]:
        """The prompt as a list, after the checks every generation makes before any work.

        `whole`: the prompt plus `max_new_tokens` must fit `max_context` (one stream); else only
        the prompt and one token must (APAR, whose streams share `max_new_tokens`).
        Raises ValueError, or ContextOverflowError for a request that cannot fit."""
        check_max_new_tokens(max_new_tokens)
        prompt = list(prompt_ids)
        if not prompt:
            raise ValueError("generation needs a non-empty prompt")
        self._check_ids(prompt)
        if whole and len(prompt) + max_new_tokens > self.max_context:
            raise ContextOverflowError(
                f"prompt of {len(prompt)} tokens + max_new_tokens {max_new_tokens} "
                f"= {len(prompt) + max_new_tokens} tokens exceeds the model's context of "
                f"{self.max_context}; shorten the conversation or lower max_new_tokens"
            )
        if len(prompt) >= self.max_context:
            raise ContextOverflowError(
                f"prompt of {len(prompt)} tokens leaves no room in the model's context of "
                f"{self.max_context}; shorten the conversation"
            )
        return prompt

    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        stop_token_ids: Iterable[int] = (),
    ) -> Iterator[int]:
        """Yield up to `max_new_tokens` new token ids (greedy when `sampling` is None); a stop
        token is yielded last (so callers can tell stop from length). Closing the iterator
        frees the stream's cache blocks at once.

        Raises ContextOverflowError (before any work) when the prompt plus max_new_tokens
        does not fit `max_context`.
        """
        prompt_ids = self.check_request(prompt_ids, max_new_tokens)
        sampler = Sampler(sampling, self.config.vocab_size, self.device)
        return self._generate(prompt_ids, max_new_tokens, sampler, frozenset(stop_token_ids))

    def _generate(self, prompt_ids, max_new_tokens, sampler, stops) -> Iterator[int]:
        if max_new_tokens == 0:
            return
        sampler.observe(prompt_ids)
        stream = self.cache.new_stream()
        try:
            logits = self.prefill(stream, prompt_ids)
            for i in range(max_new_tokens):
                tok = sampler.sample(logits)
                yield tok
                if tok in stops or i + 1 == max_new_tokens:
                    return
                logits = self.decode_step([stream], [tok])[0]
        finally:
            self.cache.free(stream)
