"""The paged KV cache's block manager on its own: plain Python, no tensors (torch not imported)."""

from __future__ import annotations

import random

import pytest

from glm_agent.engine.blocks import BlockManager, CopyOnWrite
from glm_agent.engine.errors import CacheExhaustedError, EngineError


def _manager(num_blocks=16, block_size=4) -> BlockManager:
    return BlockManager(num_blocks, block_size)


def test_append_hands_out_consecutive_blocks_and_free_returns_them():
    m = _manager()
    s = m.new_stream()
    assert m.append(s, 6) == ([0, 1, 2, 3, 4, 5], None)
    assert m.append(s, 3) == ([6, 7, 8], None)
    assert m.block_table(s) == [0, 1, 2] and m.length(s) == 9 and m.is_contiguous(s)
    assert m.num_used_blocks == 3 and m.num_free_blocks == 13 and m.high_water == 3
    m.free(s)
    assert m.num_used_blocks == 0 and m.live_streams == [] and m.refcount(0) == 0
    m.free(s)  # twice is harmless
    with pytest.raises(KeyError, match="unknown or freed KV-cache stream"):
        m.length(s)


def test_a_taken_next_block_makes_the_stream_non_contiguous():
    m = _manager()
    a, b = m.new_stream(), m.new_stream()
    m.append(a, 4)  # block 0
    m.append(b, 4)  # block 1: a's next block is gone
    slots, _ = m.append(a, 1)
    assert m.block_table(a) == [0, 2] and slots == [8] and not m.is_contiguous(a)
    assert m.is_contiguous(b)


def test_fork_shares_every_block_and_allocates_nothing():
    m = _manager(num_blocks=3)
    p = m.new_stream()
    m.append(p, 10)  # blocks 0, 1 full, block 2 half: the pool is full
    child = m.fork(p)  # still possible: a fork takes no block
    assert m.block_table(child) == m.block_table(p) == [0, 1, 2]
    assert [m.refcount(b) for b in range(3)] == [2, 2, 2] and m.length(child) == 10
    assert m.num_free_blocks == 0


def test_copy_on_write_moves_only_the_shared_partial_block():
    m = _manager()
    p = m.new_stream()
    m.append(p, 10)
    child = m.fork(p)
    assert m.blocks_needed(child, 1) == 1  # the copy's block
    slots, cow = m.append(child, 1)
    new = m.block_table(child)[2]
    assert m.block_table(child)[:2] == [0, 1] and new not in (0, 1, 2)  # full blocks still shared
    assert cow == CopyOnWrite(src=2, dst=new, count=2) and slots == [new * 4 + 2]
    assert [m.refcount(b) for b in (0, 1, 2, new)] == [2, 2, 1, 1]
    # The parent owns block 2 alone now and keeps writing it in place: no copy, no new block.
    assert m.append(p, 1) == ([10], None)
    assert m.num_used_blocks == 4
    m.free(p)
    assert [m.refcount(b) for b in (0, 1, 2)] == [1, 1, 0]
    m.free(child)
    assert m.num_used_blocks == 0


def test_fork_at_a_block_boundary_needs_no_copy():
    m = _manager()
    p = m.new_stream()
    m.append(p, 8)
    child = m.fork(p)
    assert m.append(child, 1)[1] is None and m.append(p, 1)[1] is None
    assert m.block_table(child)[:2] == m.block_table(p)[:2] == [0, 1]
    assert m.block_table(child)[2] != m.block_table(p)[2] and m.num_used_blocks == 4


def test_an_exhausted_pool_raises_before_anything_changes():
    m = _manager(num_blocks=3)
    s = m.new_stream()
    m.append(s, 8)
    with pytest.raises(CacheExhaustedError, match="needs 2 more blocks of 4 tokens but only 1 of 3 are free") as info:
        m.append(s, 5)
    assert isinstance(info.value, EngineError) and "larger cache_tokens" in str(info.value)
    assert m.length(s) == 8 and m.block_table(s) == [0, 1] and m.num_free_blocks == 1
    child = m.fork(s)
    m.append(s, 1)  # takes the last block
    with pytest.raises(CacheExhaustedError):
        m.append(child, 1)
    assert m.length(child) == 8


def test_freed_blocks_are_reused_lowest_first():
    m = _manager()
    streams = [m.new_stream() for _ in range(4)]
    for s in streams:
        m.append(s, 4)  # one block each: 0, 1, 2, 3
    m.free(streams[2])
    m.free(streams[0])
    late = m.new_stream()
    m.append(late, 4)
    assert m.block_table(late) == [0] and m.high_water == 4


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        BlockManager(0, 16)
    with pytest.raises(ValueError, match="positive"):
        BlockManager(8, 0)


def test_random_workload_keeps_the_books_and_never_writes_a_shared_block():
    """Random new/fork/append/free: reference counts equal the tables' references, the free count
    is right, `blocks_needed` predicts what `append` takes, and every slot a stream is given lies
    in a block only that stream holds (a sibling never writes what another stream reads)."""
    rng = random.Random(7)
    bs = 4
    m = BlockManager(48, bs)
    live: list[int] = []
    for _ in range(3000):
        op = rng.random()
        if not live or op < 0.15:
            live.append(m.new_stream())
        elif op < 0.3:
            live.append(m.fork(rng.choice(live)))
        elif op < 0.4:
            m.free(live.pop(rng.randrange(len(live))))
        else:
            s = rng.choice(live)
            n = rng.randint(1, 9)
            need, free = m.blocks_needed(s, n), m.num_free_blocks
            try:
                slots, cow = m.append(s, n)
            except CacheExhaustedError:
                assert need > free
                m.free(live.pop(rng.randrange(len(live))))
                continue
            assert free - m.num_free_blocks == need
            table = m.block_table(s)
            assert all(m.refcount(slot // bs) == 1 and slot // bs in table for slot in slots)
            if cow is not None:
                assert cow.dst == table[(m.length(s) - n) // bs] and cow.count == (m.length(s) - n) % bs
        refs = [0] * m.num_blocks
        for s in live:
            assert len(m.block_table(s)) == -(-m.length(s) // bs)
            for b in m.block_table(s):
                refs[b] += 1
        assert refs == [m.refcount(b) for b in range(m.num_blocks)]
        assert m.num_free_blocks == refs.count(0)
        assert sorted(m.live_streams) == sorted(live)
