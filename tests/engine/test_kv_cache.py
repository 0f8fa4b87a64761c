"""Paged KV cache: block accounting, fork / copy-on-write, and exactness of paged attention."""

from __future__ import annotations

import pytest
import torch
from _random_engine import random_engine

from glm_agent.engine.errors import CacheExhaustedError
from glm_agent.engine.kv_cache import PagedKVCache

TOL = 1e-4


def _cache(max_blocks=16, block_size=4, **kw):
    return PagedKVCache(2, 2, 8, max_blocks=max_blocks, block_size=block_size, **kw)


# ---- block accounting -----------------------------------------------------------------------


def test_append_allocates_blocks_and_free_returns_them():
    c = _cache()
    s = c.new_stream()
    assert c.append(s, 6) == [0, 1, 2, 3, 4, 5]
    assert c.block_table(s) == [0, 1] and c.length(s) == 6
    assert c.append(s, 3) == [6, 7, 8]
    assert c.num_used_blocks == 3 and c.num_free_blocks == 13
    c.free(s)
    assert c.num_used_blocks == 0 and c.live_streams == []
    c.free(s)  # twice is harmless


def test_fork_shares_every_block_without_copy():
    c = _cache()
    p = c.new_stream()
    c.append(p, 10)  # blocks 0, 1 full, block 2 half
    c.k[:, :, :10] = torch.randn(2, 2, 10, 8)
    before = c.k.clone()
    child = c.fork(p)
    assert c.block_table(child) == c.block_table(p) == [0, 1, 2]
    assert [c.refcount(b) for b in (0, 1, 2)] == [2, 2, 2]
    assert c.num_used_blocks == 3 and c.length(child) == 10
    assert torch.equal(c.k, before)


def test_copy_on_write_copies_only_the_partial_last_block():
    c = _cache()
    p = c.new_stream()
    c.append(p, 10)
    c.k[:, :, :10] = torch.randn(2, 2, 10, 8)
    c.v[:, :, :10] = torch.randn(2, 2, 10, 8)
    child = c.fork(p)
    slots = c.append(child, 1)
    table = c.block_table(child)
    assert table[:2] == [0, 1] and table[2] not in (0, 1, 2)  # full blocks still shared
    assert c.num_used_blocks == 4  # exactly one block copied
    new = table[2]
    assert torch.equal(c.k[:, :, new * 4 : new * 4 + 2], c.k[:, :, 8:10])
    assert torch.equal(c.v[:, :, new * 4 : new * 4 + 2], c.v[:, :, 8:10])
    assert slots == [new * 4 + 2]
    assert [c.refcount(b) for b in (0, 1, 2, new)] == [2, 2, 1, 1]
    # The parent now owns block 2 alone and keeps writing it in place.
    assert c.append(p, 1) == [10]
    assert c.num_used_blocks == 4
    c.free(p)
    c.free(child)
    assert c.num_used_blocks == 0


def test_fork_at_block_boundary_needs_no_copy():
    c = _cache()
    p = c.new_stream()
    c.append(p, 8)
    child = c.fork(p)
    c.append(child, 1)
    c.append(p, 1)
    assert c.block_table(child)[:2] == c.block_table(p)[:2] == [0, 1]
    assert c.num_used_blocks == 4


def test_exhausted_pool_raises_and_changes_nothing():
    c = _cache(max_blocks=3)
    a, b = c.new_stream(), c.new_stream()
    c.append(a, 8)
    with pytest.raises(CacheExhaustedError, match="needs 3 more blocks.*only 1 of 3 are free"):
        c.plan([a, b], [1, 5])
    assert c.length(a) == 8 and c.length(b) == 0 and c.num_used_blocks == 2


def test_pool_grows_on_demand():
    c = _cache(max_blocks=100, initial_blocks=2)
    s = c.new_stream()
    c.k[:, :, :8] = 1.0
    c.append(s, 30)
    assert c.k.shape[2] >= 32 and c.k[:, :, :8].eq(1).all()


# ---- paged attention equals plain attention ---------------------------------------------------


# The cache is arch-independent; one interleaved-partial and one neox RoPE model suffice.
@pytest.fixture(scope="module", params=["glm4", "qwen2"])
def engine(request):
    return random_engine(request.param, block_size=4)


PROMPT = [3, 44, 17, 200, 9, 81, 120, 5, 66, 31, 250, 12, 7]


def test_prefill_then_decode_equals_full_sequence(engine):
    seq = PROMPT + [90, 14, 2, 77, 188, 6]
    full = engine.forward_logits(seq)
    s = engine.new_stream()
    got = [engine.prefill(s, PROMPT)]
    for tok in seq[len(PROMPT) :]:
        got.append(engine.decode_step([s], [tok])[0])
    engine.free(s)
    ref = full[len(PROMPT) - 1 :]
    assert (torch.stack(got) - ref).abs().max().item() < TOL


def test_chunked_prefill_over_cached_prefix(engine):
    full = engine.forward_logits(PROMPT)
    s = engine.new_stream()
    engine.prefill(s, PROMPT[:5])
    logits = engine.step([s], [PROMPT[5:]])  # 8 new queries over a 5-token prefix
    engine.free(s)
    assert (logits[0] - full[-1]).abs().max().item() < TOL


def test_batch_of_streams_of_different_lengths_equals_each_alone(engine):
    prompts = [PROMPT, PROMPT[:4], [8, 9, 10, 11, 12, 13, 14, 15, 16]]
    nxt = [[21, 22, 23], [31, 32, 33], [41, 42, 43]]
    streams = [engine.new_stream() for _ in prompts]
    for s, p in zip(streams, prompts):
        engine.prefill(s, p)
    batched = [engine.decode_step(streams, [n[i] for n in nxt]) for i in range(3)]
    # Stream 1's next block was already taken by stream 2: it was read through a gather.
    assert not engine.cache.is_contiguous(streams[1])
    for j, (p, n) in enumerate(zip(prompts, nxt)):
        alone = engine.forward_logits(p + n)[len(p) :]
        got = torch.stack([b[j] for b in batched])
        assert (got - alone).abs().max().item() < TOL
    for s in streams:
        engine.free(s)
    assert engine.cache.num_used_blocks == 0


def test_non_contiguous_block_table_reads_correctly(engine):
    a, b = engine.new_stream(), engine.new_stream()
    for i in range(0, 12, 4):  # alternate so each stream's blocks interleave in the pool
        engine.prefill(a, PROMPT[i : i + 4])
        engine.prefill(b, PROMPT[::-1][i : i + 4])
    assert not engine.cache.is_contiguous(a)
    got = engine.decode_step([a], [99])[0]
    ref = engine.forward_logits(PROMPT[:12] + [99])[-1]
    assert (got - ref).abs().max().item() < TOL
    engine.free(a)
    engine.free(b)


def test_forked_streams_see_prefix_only_and_never_write_shared_blocks(engine):
    cache = engine.cache
    parent = engine.new_stream()
    engine.prefill(parent, PROMPT)  # 13 tokens: 3 full blocks + 1 partial of 4
    shared = cache.block_table(parent)
    snapshot = cache.k[:, :, [b * 4 + i for b in shared[:3] for i in range(4)]].clone()
    kids = [engine.fork(parent) for _ in range(2)]
    assert cache.num_used_blocks == len(shared)
    steps = {parent: [50, 51, 52, 53], kids[0]: [60, 61, 62, 63], kids[1]: [70, 71, 72, 73]}
    order = [parent, *kids]
    logits = [engine.decode_step(order, [steps[s][i] for s in order]) for i in range(4)]
    for j, s in enumerate(order):
        alone = engine.forward_logits(PROMPT + steps[s])[len(PROMPT) :]
        got = torch.stack([step[j] for step in logits])
        assert (got - alone).abs().max().item() < TOL
    after = cache.k[:, :, [b * 4 + i for b in shared[:3] for i in range(4)]]
    assert torch.equal(snapshot, after)  # full shared blocks untouched
    for s in order:
        assert cache.block_table(s)[:3] == shared[:3]
    for s in order:
        engine.free(s)
    assert cache.num_used_blocks == 0


def test_mixed_batch_of_prefill_and_decode_rows(engine):
    a, b, c = engine.new_stream(), engine.new_stream(), engine.new_stream()
    engine.prefill(a, PROMPT[:6])
    engine.prefill(b, PROMPT[6:])
    logits = engine.step([a, b, c], [[70, 71, 72], [80], [90, 91]])  # c starts from nothing
    refs = [
        engine.forward_logits(PROMPT[:6] + [70, 71, 72])[-1],
        engine.forward_logits(PROMPT[6:] + [80])[-1],
        engine.forward_logits([90, 91])[-1],
    ]
    assert (logits - torch.stack(refs)).abs().max().item() < TOL
    for s in (a, b, c):
        engine.free(s)
