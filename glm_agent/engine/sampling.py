"""Turn next-token logits into token ids: greedy, temperature, top-k, top-p, repetition penalty.

Semantics follow transformers' logits processors so results are comparable:
repetition penalty (CTRL) divides positive and multiplies negative logits of every token already
seen (prompt + output); then temperature; then top-k; then top-p keeps the smallest set of
most likely tokens whose probability reaches `top_p` (at least one). `temperature == 0` is
greedy (argmax after the penalty). A seed makes sampling reproducible via a private
`torch.Generator`; without one each `Sampler` draws a fresh seed.

Public API:
    Sampler(params: SamplingParams | None, vocab_size: int, device="cpu")   (None: greedy)
    Sampler.observe(token_ids: Iterable[int]) -> None      (mark tokens as seen for the penalty)
    Sampler.sample(logits: Tensor[vocab]) -> int           (also observes the sampled token)
    Sampler.fork() -> Sampler                              (same params and seen set; for APAR)
    process_logits(logits, params, seen=None) -> Tensor    (the filters, for tests/batched use)
"""

from __future__ import annotations

from typing import Iterable

import torch

from glm_agent.engine.params import SamplingParams

__all__ = ["Sampler", "SamplingParams", "process_logits"]


def process_logits(
    logits: torch.Tensor, params: SamplingParams, seen: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply penalty, temperature, top-k, top-p to `[..., vocab]` logits (float32 copy).

    Filtered-out tokens get -inf. `seen` is a bool mask `[..., vocab]` of tokens already seen.
    """
    x = logits.float().clone()
    p = params.repetition_penalty
    if p != 1.0 and seen is not None:
        penalized = torch.where(x > 0, x / p, x * p)
        x = torch.where(seen, penalized, x)
    if params.temperature > 0:
        x = x / params.temperature
    k = params.top_k
    if 0 < k < x.shape[-1]:
        kth = torch.topk(x, k, dim=-1).values[..., -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        probs = sorted_x.softmax(-1)
        # Drop a token when the mass of the tokens strictly before it already reaches top_p.
        before = probs.cumsum(-1) - probs
        drop_sorted = before >= params.top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        x = x.masked_fill(drop, float("-inf"))
    return x


class Sampler:
    def __init__(self, params: SamplingParams | None, vocab_size: int, device="cpu") -> None:
        params = params or SamplingParams()
        if not isinstance(params, SamplingParams):
            raise TypeError(f"Sampler needs SamplingParams, got {type(params).__name__}")
        self.params = params
        self.vocab_size = vocab_size
        self.device = torch.device(device)
        self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=self.device)
        self.generator: torch.Generator | None = None
        if params.temperature > 0:
            self.generator = torch.Generator(device=self.device)
            if params.seed is not None:
                self.generator.manual_seed(params.seed)
            else:
                self.generator.seed()

    @property
    def greedy(self) -> bool:
        return self.params.greedy

    def observe(self, token_ids: Iterable[int]) -> None:
        ids = [t for t in token_ids if 0 <= t < self.vocab_size]
        if ids and self.params.repetition_penalty != 1.0:
            self.seen[torch.tensor(ids, device=self.device)] = True

    def sample(self, logits: torch.Tensor) -> int:
        s = self.params
        if self.greedy and s.repetition_penalty == 1.0:
            tok = int(logits.argmax())  # fast path: no copies
        else:
            x = process_logits(logits, s, self.seen)
            if self.greedy:
                tok = int(x.argmax())
            else:
                probs = x.softmax(-1)
                tok = int(torch.multinomial(probs, 1, generator=self.generator))
        if s.repetition_penalty != 1.0:
            self.seen[tok] = True
        return tok

    def fork(self) -> "Sampler":
        child = Sampler.__new__(Sampler)
        child.params = self.params
        child.vocab_size = self.vocab_size
        child.device = self.device
        child.seen = self.seen.clone()
        child.generator = self.generator  # one random stream for the whole request
        return child
