"""Decode steps through the captured-graph path (`engine/cuda_graphs.py`).

On CPU the same static-buffer step runs without capture (`capture=False`): it must give the
eager engine's logits for every shape a bucket pads (batch rows, block-table width), for forked
streams sharing blocks, across pool growth, and must never disturb a stream through its padding
rows. On CUDA the captured graphs must give the eager engine's tokens (skipped without a GPU).
"""

from __future__ import annotations

import pytest
import torch
from _random_engine import random_weights, tiny_config

from glm_agent.engine.cuda_graphs import DecodeGraphs
from glm_agent.engine.engine import Engine
from glm_agent.engine.scheduler import Scheduler

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device: CUDA graphs cannot be captured here")


def _pair(arch="glm4", quant=None, **kw):
    """Two engines with the same weights: one decoding through static buckets, one plain eager."""
    config = tiny_config(arch)
    static = Engine.from_weights(config, random_weights(config, 3), quant=quant, cuda_graphs=False, **kw)
    static.graphs = DecodeGraphs(static.model, static.cache, max_context=static.max_context,
                                 batch_sizes=(1, 2, 4, 8), min_blocks=2, capture=False)
    eager = Engine.from_weights(config, random_weights(config, 3), quant=quant, cuda_graphs=False, **kw)
    return static, eager


def _prompts(n, seed=0, low=5, high=40):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, 250, (int(torch.randint(low, high, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


def _greedy_batch(engine, prompts, steps, fork_first=False):
    """Prefill each prompt in its own stream (optionally fork the first), then decode all together."""
    streams = [engine.new_stream() for _ in prompts]
    nxt = [int(engine.prefill(s, p).argmax()) for s, p in zip(streams, prompts)]
    if fork_first:  # a child sharing every block of stream 0, including its partly filled last one
        streams.append(engine.fork(streams[0]))
        nxt.append(nxt[0])
    out, logits_seen = [], []
    for _ in range(steps):
        logits = engine.decode_step(streams, nxt)
        logits_seen.append(logits)
        nxt = logits.argmax(-1).tolist()
        out.append(nxt)
    for s in streams:
        engine.free(s)
    return out, logits_seen


@pytest.mark.parametrize("arch", ["glm4", "qwen2", "glm4_0414"])
@pytest.mark.parametrize("batch", [1, 3, 5])
def test_static_step_matches_eager(arch, batch):
    static, eager = _pair(arch, block_size=4)
    prompts = _prompts(batch, seed=batch)
    got, got_logits = _greedy_batch(static, prompts, 12)
    want, want_logits = _greedy_batch(eager, prompts, 12)
    assert got == want
    for a, b in zip(got_logits, want_logits):
        assert (a - b).abs().max().item() < 1e-4
    # padded rows (3 -> 4, 5 -> 8) and block-table widths rounded to powers of two were used
    assert {k[0] for k in static.graphs._buckets} >= {1 if batch == 1 else 4 if batch == 3 else 8}
    assert any(k[1] > 2 for k in static.graphs._buckets)


def test_forked_streams_and_copy_on_write_match_eager():
    static, eager = _pair(block_size=4)
    prompts = _prompts(2, seed=7)
    got, got_logits = _greedy_batch(static, prompts, 10, fork_first=True)
    want, want_logits = _greedy_batch(eager, prompts, 10, fork_first=True)
    assert got == want
    assert max((a - b).abs().max().item() for a, b in zip(got_logits, want_logits)) < 1e-4


def test_padding_rows_never_touch_a_stream():
    """Padding rows write to the scratch block only: every key of every live stream is intact."""
    static, _ = _pair(block_size=4)
    keep = static.new_stream()
    static.prefill(keep, _prompts(1, seed=11)[0])
    blocks = static.cache.block_table(keep)
    n = static.cache.length(keep)
    slots = [b * 4 + i for b in blocks for i in range(4)][:n]
    before = static.cache.k[:, :, slots].clone(), static.cache.v[:, :, slots].clone()
    other = static.new_stream()
    tok = int(static.prefill(other, [5, 6, 7]).argmax())
    for _ in range(6):  # batch of 1 in a bucket of 1, then grow the other stream alone
        tok = int(static.decode_step([other], [tok]).argmax())
    three = [static.new_stream() for _ in range(3)]
    nxt = [int(static.prefill(s, [9, 10 + i]).argmax()) for i, s in enumerate(three)]
    for _ in range(4):  # 3 streams in a bucket of 4: one padding row per step
        nxt = static.decode_step(three, nxt).argmax(-1).tolist()
    after = static.cache.k[:, :, slots], static.cache.v[:, :, slots]
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert static.cache.scratch_block not in {b for s in static.cache.live_streams for b in static.cache.block_table(s)}


def test_pool_growth_drops_the_buckets_and_keeps_the_answer():
    static, eager = _pair(block_size=4)
    gen0 = static.cache.generation
    prompts = _prompts(4, seed=5, low=60, high=90)  # far past the first pool of 64 blocks
    got, _ = _greedy_batch(static, prompts, 8)
    want, _ = _greedy_batch(eager, prompts, 8)
    assert got == want
    assert static.cache.generation > gen0
    assert static.graphs._generation == static.cache.generation


def test_steps_too_big_for_a_bucket_run_eagerly():
    static, eager = _pair(block_size=4)
    prompts = _prompts(9, seed=9)  # 9 streams > the largest bucket of 8
    got, _ = _greedy_batch(static, prompts, 4)
    want, _ = _greedy_batch(eager, prompts, 4)
    assert got == want
    assert all(k[0] <= 8 for k in static.graphs._buckets)


def test_bucket_rounding():
    static, _ = _pair(block_size=16)
    g = static.graphs  # max_context 512 -> at most 32 blocks a stream
    assert g.bucket_of(1, 1) == (1, 2)
    assert g.bucket_of(3, 3) == (4, 4)
    assert g.bucket_of(8, 17) == (8, 32)
    assert g.bucket_of(5, 32) == (8, 32)
    with pytest.raises(ValueError, match="at most 8 streams"):
        g.bucket_of(9, 1)


def test_scheduler_through_the_static_step_matches_requests_alone():
    static, eager = _pair(block_size=8)
    prompts = _prompts(5, seed=21)
    alone = [list(eager.generate(p, 10)) for p in prompts]
    sched = Scheduler(static)
    try:
        gens = [sched.submit(p, 10) for p in prompts]
        together = [list(g) for g in gens]
    finally:
        sched.close()
    assert together == alone


def test_capture_needs_cuda():
    if HAS_CUDA:
        pytest.skip("this machine has CUDA: capture is allowed here")
    config = tiny_config()
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        Engine.from_weights(config, random_weights(config), cuda_graphs=True)
    assert Engine.from_weights(config, random_weights(config)).graphs is None  # CPU default: off


@needs_cuda
@pytest.mark.parametrize("quant", [None, {"bits": 8}, {"bits": 4, "group_size": 32}])
def test_captured_graphs_match_eager_on_cuda(quant):
    config = tiny_config("glm4")

    def build(graphs):
        weights = ((n, t.to(torch.bfloat16)) for n, t in random_weights(config, 3))
        return Engine.from_weights(config, weights, quant=quant, device="cuda", dtype=torch.bfloat16,
                                   block_size=4, cuda_graphs=graphs)

    graphed, eager = build(True), build(False)
    assert graphed.graphs is not None and eager.graphs is None
    for batch in (1, 3):
        prompts = _prompts(batch, seed=batch, low=60, high=90)  # grows the pool: re-capture
        got, got_logits = _greedy_batch(graphed, prompts, 16, fork_first=batch == 3)
        want, want_logits = _greedy_batch(eager, prompts, 16, fork_first=batch == 3)
        assert got == want
        assert max((a - b).abs().max().item() for a, b in zip(got_logits, want_logits)) < 1e-2
    assert graphed.graphs.captures >= 2
    sched = Scheduler(graphed)
    try:
        together = [list(g) for g in [sched.submit(p, 12) for p in _prompts(6, seed=4)]]
    finally:
        sched.close()
    assert together == [list(eager.generate(p, 12)) for p in _prompts(6, seed=4)]
