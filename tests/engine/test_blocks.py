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


# ---- prefix caching -------------------------------------------------------------------------


def _filled(m: BlockManager, ids: list[int]) -> int:
    s = m.new_stream()
    m.append(s, len(ids), list(ids))
    return s


def test_prefix_hit_shares_full_blocks_and_leaves_one_token_to_compute():
    m = _manager()
    ids = list(range(100, 110))  # 2 full blocks + 2 tokens
    a = _filled(m, ids)
    first = m.block_table(a)
    b = m.new_stream()
    assert m.attach_prefix(b, ids + [7, 8]) == 8  # the 2 full blocks, not the partial one
    assert m.block_table(b) == first[:2] and m.length(b) == 8
    assert [m.refcount(x) for x in first[:2]] == [2, 2]
    c = m.new_stream()
    assert m.attach_prefix(c, ids[:8]) == 4  # a whole-block prompt still computes its last id
    for s in (a, b, c):
        m.free(s)
    assert m.num_used_blocks == 0 and m.num_cached_blocks == 2


def test_prefix_miss_on_any_earlier_difference():
    m = _manager()
    ids = list(range(100, 112))
    m.free(_filled(m, ids))
    s = m.new_stream()
    assert m.attach_prefix(s, [999] + ids[1:]) == 0  # first block differs: nothing matches
    t = m.new_stream()
    # Same second block tokens but a different first block: the chain makes it a miss.
    assert m.attach_prefix(t, ids[:4] + [5, 5, 5, 5] + ids[8:] + [1]) == 4
    u = m.new_stream()
    assert m.attach_prefix(u, ids + [1]) == 12  # freed blocks were kept: a full hit


def test_freed_cached_blocks_count_free_and_are_evicted_least_recently_used():
    m = _manager(num_blocks=4)
    old, new = [1, 2, 3, 4], [5, 6, 7, 8]
    m.free(_filled(m, old))
    m.free(_filled(m, new))
    assert m.num_free_blocks == 4 and m.num_cached_blocks == 2
    touch = m.new_stream()
    assert m.attach_prefix(touch, old + [0]) == 4  # `old` is now the most recently used
    m.free(touch)
    s = m.new_stream()
    m.append(s, 12)  # 3 blocks: 2 never-cached free ones first, then evicts `new` (LRU)
    assert m.num_cached_blocks == 1
    probe = m.new_stream()
    assert m.attach_prefix(probe, new + [0]) == 0
    assert m.attach_prefix(m.new_stream(), old + [0]) == 4


def test_blocks_held_by_a_live_stream_are_never_evicted_and_a_full_pool_recomputes():
    m = _manager(num_blocks=3)
    ids = list(range(1, 9))
    a = _filled(m, ids)
    assert m.block_table(a) == [0, 1]  # in use by a live stream
    m.free(_filled(m, [50, 51, 52, 53]))  # block 2 cached, then evicted below
    s = m.new_stream()
    m.append(s, 4)
    assert m.num_cached_blocks == 0 and m.num_free_blocks == 0
    with pytest.raises(CacheExhaustedError):
        m.append(s, 1)  # nothing evictable: a stream's blocks are not taken from it
    b = m.new_stream()
    assert m.attach_prefix(b, ids + [9]) == 8  # sharing needs no free block
    m.free(s)
    late = m.new_stream()
    assert m.attach_prefix(late, [50, 51, 52, 53, 0]) == 0  # evicted: recompute, no error
    m.append(late, 4, [50, 51, 52, 53])  # the one free block


def test_prefix_cache_off_and_token_less_appends_index_nothing():
    off = BlockManager(8, 4, prefix_cache=False)
    off.free(_filled(off, [1, 2, 3, 4, 5]))
    assert off.attach_prefix(off.new_stream(), [1, 2, 3, 4, 5]) == 0 and off.num_cached_blocks == 0
    m = _manager()
    s = m.new_stream()
    m.append(s, 4)  # ids unknown: the stream is never indexed
    m.append(s, 4, [1, 2, 3, 4])
    m.free(s)
    assert m.num_cached_blocks == 0
    with pytest.raises(ValueError, match="token ids"):
        m.append(m.new_stream(), 2, [1])


def test_clearing_the_prefix_cache_frees_its_blocks_for_plain_use():
    m = _manager(num_blocks=4)
    m.free(_filled(m, list(range(16))))
    assert m.num_cached_blocks == 4
    m.clear_prefix_cache()
    assert m.num_cached_blocks == 0 and m.num_free_blocks == 4
    assert m.attach_prefix(m.new_stream(), list(range(17))) == 0
    s = m.new_stream()
    assert m.append(s, 16)[0] == list(range(16))  # lowest blocks first again


def test_forgotten_stream_blocks_are_not_reused():
    m = _manager()
    s = _filled(m, [1, 2, 3, 4, 5])
    m.forget(s)
    m.free(s)
    assert m.attach_prefix(m.new_stream(), [1, 2, 3, 4, 5]) == 0


def test_random_workload_with_prefix_sharing_keeps_the_books():
    rnd = random.Random(7)
    m = _manager(num_blocks=24, block_size=4)
    live: dict[int, list[int]] = {}
    bases = [[rnd.randrange(50) for _ in range(12)] for _ in range(3)]
    for _ in range(400):
        op = rnd.random()
        if op < 0.4 and len(live) < 6:
            ids = rnd.choice(bases)[: rnd.randrange(1, 13)] + [rnd.randrange(50) for _ in range(rnd.randrange(3))]
            s = m.new_stream()
            got = m.attach_prefix(s, ids)
            assert got % 4 == 0 and got < len(ids)
            try:
                m.append(s, len(ids) - got, ids[got:])
            except CacheExhaustedError:
                m.free(s)
                continue
            live[s] = ids
        elif op < 0.7 and live:
            s = rnd.choice(list(live))
            try:
                tok = rnd.randrange(50)
                m.append(s, 1, [tok])
                live[s].append(tok)
            except CacheExhaustedError:
                pass
        elif live:
            s = rnd.choice(list(live))
            del live[s]
            m.free(s)
        refs = [0] * m.num_blocks
        for s in live:
            assert m.length(s) == len(live[s])
            for b in m.block_table(s):
                refs[b] += 1
        assert refs == [m.refcount(b) for b in range(m.num_blocks)]
        assert m.num_free_blocks == sum(r == 0 for r in refs)
        assert m.num_cached_blocks <= m.num_free_blocks
    for s in list(live):
        m.free(s)
    assert m.num_used_blocks == 0
