"""`SamplingParams`: how the engine picks each next token (no torch, no runtime types).

    SamplingParams(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=None)

`temperature == 0` is greedy; `top_k == 0` and `top_p == 1` and `repetition_penalty == 1` are
off. Out-of-range values raise `ValueError` at construction, saying what to change. How many
tokens to generate and which ids stop a stream are arguments of `generate`, checked by
`check_max_new_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SamplingParams", "check_max_new_tokens"]


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def check_max_new_tokens(n: int) -> None:
    """A clear error for a bad token budget (a settings object passed by mistake included)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"max_new_tokens must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {n}")
