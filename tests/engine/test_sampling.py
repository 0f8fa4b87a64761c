"""Sampling: greedy, seeds, top-k/top-p support, repetition penalty, setting validation."""

from __future__ import annotations

import pytest
import torch

from glm_agent.engine.params import SamplingParams as S
from glm_agent.engine.sampling import Sampler, process_logits

LOGITS = torch.tensor([1.0, 3.0, 2.0, -1.0, 0.5, 2.5, -2.0, 0.0])


def _draws(settings, n=300, logits=LOGITS):
    sampler = Sampler(settings, len(logits))
    return [sampler.sample(logits) for _ in range(n)]


def test_greedy_is_argmax():
    assert _draws(S(temperature=0.0), n=5) == [1] * 5


def test_seeded_sampling_is_reproducible():
    a = _draws(S(temperature=1.0, seed=7))
    b = _draws(S(temperature=1.0, seed=7))
    c = _draws(S(temperature=1.0, seed=8))
    assert a == b and a != c
    assert len(set(a)) > 3  # really sampling


def test_top_k_restricts_support():
    assert set(_draws(S(temperature=1.5, top_k=2, seed=0))) == {1, 5}
    x = process_logits(LOGITS, S(temperature=1.0, top_k=3))
    assert torch.isfinite(x).sum() == 3


def test_top_p_keeps_smallest_nucleus():
    probs = LOGITS.softmax(-1)  # sorted: 1 (.39), 5 (.24), 2 (.14), 0 (.05)...
    order = probs.argsort(descending=True)
    cum = probs[order].cumsum(0)
    keep = int((cum < 0.7).sum()) + 1  # tokens up to and including the one crossing 0.7
    drawn = set(_draws(S(temperature=1.0, top_p=0.7, seed=1), n=500))
    assert drawn == set(order[:keep].tolist())
    # A tiny top_p always keeps the single most likely token.
    assert set(_draws(S(temperature=1.0, top_p=1e-6, seed=1), n=20)) == {1}


def test_temperature_sharpens():
    hot = _draws(S(temperature=5.0, seed=3), n=400)
    cold = _draws(S(temperature=0.2, seed=3), n=400)
    assert cold.count(1) > hot.count(1)


def test_repetition_penalty_discourages_seen_tokens():
    s = Sampler(S(temperature=0.0, repetition_penalty=2.0), 8)
    s.observe([1])  # 3.0 -> 1.5 : token 5 (2.5) wins
    assert s.sample(LOGITS) == 5
    assert s.sample(LOGITS) == 2  # 5 is now seen too (2.5 -> 1.25); 2.0 wins
    x = process_logits(LOGITS, S(repetition_penalty=2.0), seen=torch.tensor([False] * 3 + [True] + [False] * 4))
    assert x[3] == -2.0  # negative logits are multiplied, not divided
    assert torch.equal(x[:3], LOGITS[:3])


def test_fork_copies_seen_set():
    s = Sampler(S(temperature=0.0, repetition_penalty=2.0), 8)
    s.observe([1])
    child = s.fork()
    child.observe([5])
    assert s.sample(LOGITS) == 5 and child.sample(LOGITS) == 2


@pytest.mark.parametrize(
    "bad, msg",
    [
        (dict(temperature=-1), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(top_k=-2), "top_k"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
    ],
)
def test_bad_params_are_rejected_when_built(bad, msg):
    with pytest.raises(ValueError, match=msg):
        S(**bad)


def test_sampler_defaults_to_greedy_and_refuses_other_settings_types():
    assert Sampler(None, 8).greedy and Sampler(None, 8).sample(LOGITS) == 1

    class Settings:  # a runtime settings object passed where the engine wants SamplingParams
        temperature, top_p, top_k, repetition_penalty, seed = 0.0, 1.0, 0, 1.0, None

    with pytest.raises(TypeError, match="SamplingParams"):
        Sampler(Settings(), 8)
