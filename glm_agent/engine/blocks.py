"""`BlockManager`: the bookkeeping half of the paged KV cache, in plain Python (no tensors).

The cache's pool is cut into `num_blocks` blocks of `block_size` token slots (slot = block *
block_size + offset). Each stream (one sequence being decoded) owns a block table: the blocks
holding its tokens, in order. Blocks carry reference counts, as in vLLM's and nano-vllm's block
managers:

- `new_stream()` starts an empty stream; `fork(parent)` makes a child whose table is a copy of
  the parent's (every block's count +1, nothing copied), so the child sees the parent up to
  the fork and its positions continue from there.
- `append(stream, n)` reserves slots for n new tokens. Full shared blocks are never written
  again; the first write into a *shared, partly filled* last block moves the stream to a new
  block (copy-on-write): `append` returns which slots the tensor pool must copy there, so a
  sibling never writes a block another stream reads.
- `free(stream)` drops the stream's references; blocks whose count reaches 0 are free again.
- Running out of blocks raises `CacheExhaustedError` before anything changes.

Allocation prefers the block right after a stream's last one, so a lone stream gets consecutive
blocks and the pool can read it as one slice; otherwise the lowest free block is used, which
keeps `high_water` (the pool size actually needed) small.

Prefix caching (vLLM's automatic prefix caching, as a hash chain): when `append` is given the
token ids, every block that fills up is indexed by a digest of its tokens and of the digest of
the block before it, i.e. of the whole prefix up to its end. A freed indexed block keeps its
contents and goes to an LRU list instead of the free heap; `attach_prefix(stream, ids)` hands
a new stream the longest chain of indexed full blocks that `ids` starts with (read-only: full
blocks are never written again), so only the rest has to be computed. Cached blocks count as
free: an allocation takes a never-indexed free block first, else evicts the least recently used
cached block. A block a live stream holds (ref > 0) is never evicted, and a full pool just means
fewer hits, never an error.
"""

from __future__ import annotations

import hashlib
import heapq
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

from glm_agent.engine.errors import CacheExhaustedError

__all__ = ["BlockManager", "BlockTable", "CopyOnWrite"]


@dataclass
class BlockTable:
    """One stream's blocks and token count (read it, do not change it)."""

    blocks: list[int] = field(default_factory=list)
    length: int = 0
    # True while the blocks are consecutive: the pool then reads them as one slice.
    contiguous: bool = True
    # Token ids so far, kept while every append gave them (prefix caching); None once one did not.
    tokens: list[int] | None = field(default_factory=list)
    # Digest of each full block's prefix, in order (the hash chain; len = full blocks indexed).
    digests: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class CopyOnWrite:
    """Copy the first `count` slots of block `src` into block `dst` before writing more."""

    src: int
    dst: int
    count: int


def _digest(parent: bytes, tokens: list[int]) -> bytes:
    # A cryptographic digest: a crafted prompt must not collide with another user's prefix.
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, *, prefix_cache: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_cache = prefix_cache
        self._ref = [0] * num_blocks
        self._free_heap = list(range(num_blocks))  # lazy: entries with ref != 0 are stale
        self._num_free = num_blocks  # free blocks, cached ones included
        self._high_water = 0
        self._streams: dict[int, BlockTable] = {}
        self._next_id = 0
        self._cached: dict[bytes, int] = {}  # prefix digest -> block holding its last tokens
        self._block_digest: dict[int, bytes] = {}  # the inverse, for indexed blocks
        self._lru: OrderedDict[int, None] = OrderedDict()  # indexed blocks with ref 0, oldest first

    # ---- streams --------------------------------------------------------------------------

    def new_stream(self) -> int:
        return self._add(BlockTable())

    def fork(self, parent: int) -> int:
        """A child sharing every block of `parent` (no block is allocated, so it cannot fail)."""
        p = self.table(parent)
        for b in p.blocks:
            self._ref[b] += 1
        tokens = None if p.tokens is None else list(p.tokens)
        return self._add(BlockTable(list(p.blocks), p.length, p.contiguous, tokens, list(p.digests)))

    def attach_prefix(self, stream: int, ids: list[int]) -> int:
        """Give the empty `stream` the cached blocks of the longest full-block prefix of `ids`,
        leaving at least one id to compute (its logits are needed); returns the ids attached."""
        t = self.table(stream)
        if t.length or t.tokens is None:
            raise ValueError("attach_prefix() needs a new, empty stream")
        if not self.prefix_cache:
            return 0
        bs = self.block_size
        parent = b""
        for i in range((len(ids) - 1) // bs):
            d = _digest(parent, ids[i * bs : (i + 1) * bs])
            b = self._cached.get(d)
            if b is None:
                break
            if self._ref[b] == 0:  # revived from the LRU list
                del self._lru[b]
                self._num_free -= 1
            self._ref[b] += 1
            if t.blocks and b != t.blocks[-1] + 1:
                t.contiguous = False
            t.blocks.append(b)
            t.digests.append(d)
            parent = d
        t.length = len(t.blocks) * bs
        t.tokens = list(ids[: t.length])
        return t.length

    def forget(self, stream: int) -> None:
        """Un-index the stream's blocks and stop indexing it: their contents are not to be
        trusted (a forward that wrote them failed midway)."""
        t = self.table(stream)
        t.tokens = None
        for b in t.blocks:
            d = self._block_digest.pop(b, None)
            if d is not None:
                del self._cached[d]

    def clear_prefix_cache(self) -> None:
        """Forget every cached prefix (blocks in use stay with their streams)."""
        self._cached.clear()
        self._block_digest.clear()
        while self._lru:
            heapq.heappush(self._free_heap, self._lru.popitem(last=False)[0])

    def free(self, stream: int) -> None:
        t = self._streams.pop(stream, None)
        if t is None:
            return  # freeing twice is harmless (generator close after an error, ...)
        for b in t.blocks:
            self._release(b)

    def table(self, stream: int) -> BlockTable:
        try:
            return self._streams[stream]
        except KeyError:
            raise KeyError(f"unknown or freed KV-cache stream {stream}") from None

    def length(self, stream: int) -> int:
        return self.table(stream).length

    def block_table(self, stream: int) -> list[int]:
        return list(self.table(stream).blocks)

    def is_contiguous(self, stream: int) -> bool:
        return self.table(stream).contiguous

    def refcount(self, block: int) -> int:
        return self._ref[block]

    @property
    def live_streams(self) -> list[int]:
        return list(self._streams)

    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self._num_free

    @property
    def num_cached_blocks(self) -> int:
        """Free blocks that still hold an indexed prefix (reused on a hit, evicted LRU)."""
        return len(self._lru)

    @property
    def high_water(self) -> int:
        """1 + the highest block id ever handed out: how many blocks the pool must hold."""
        return self._high_water

    # ---- reserving slots --------------------------------------------------------------------

    def blocks_needed(self, stream: int, n: int) -> int:
        """Free blocks `append(stream, n)` would take (new blocks plus a copy-on-write)."""
        t = self.table(stream)
        new = -(-(t.length + n) // self.block_size) - len(t.blocks)
        return new + int(self._needs_copy(t, n))

    def check_room(self, blocks: int, who: str) -> None:
        if blocks > self._num_free:
            raise CacheExhaustedError(
                f"KV cache full: {who} needs {blocks} more blocks of {self.block_size} tokens "
                f"but only {self._num_free} of {self.num_blocks} are free "
                f"({len(self._streams)} live streams). Free finished streams, shorten the "
                "prompt or max_new_tokens, or build the engine with a larger cache_tokens."
            )

    def append(
        self, stream: int, n: int, tokens: list[int] | None = None
    ) -> tuple[list[int], CopyOnWrite | None]:
        """Reserve slots for `n` new tokens of `stream`: their slots in order, and the copy the
        pool must make first when the stream left a shared partial block (else None).

        `tokens` (the n ids) index the blocks they fill for prefix caching; the caller must have
        written those blocks' keys/values before another stream can attach them, which holds
        when the same engine step that appends also writes (attach happens between steps)."""
        t = self.table(stream)
        if tokens is not None and len(tokens) != n:
            raise ValueError(f"append() got {len(tokens)} token ids for {n} slots")
        self.check_room(self.blocks_needed(stream, n), f"stream {stream}")
        bs = self.block_size
        cow = None
        if self._needs_copy(t, n):
            old = t.blocks[-1]
            new = self._alloc(prefer=t.blocks[-2] + 1 if len(t.blocks) > 1 else None)
            cow = CopyOnWrite(old, new, t.length % bs)
            self._release(old)  # still referenced by the streams sharing it
            t.blocks[-1] = new
            if len(t.blocks) > 1 and new != t.blocks[-2] + 1:
                t.contiguous = False
        for _ in range(-(-(t.length + n) // bs) - len(t.blocks)):
            prev = t.blocks[-1] if t.blocks else None
            b = self._alloc(prefer=None if prev is None else prev + 1)
            if prev is not None and b != prev + 1:
                t.contiguous = False
            t.blocks.append(b)
        start = t.length
        t.length += n
        blocks = t.blocks
        if t.tokens is not None:
            if tokens is None:
                t.tokens = None  # content unknown from here on: index nothing more
            else:
                t.tokens += tokens
                self._index_full_blocks(t)
        return [blocks[p // bs] * bs + p % bs for p in range(start, start + n)], cow

    # ---- internals ----------------------------------------------------------------------------

    def _add(self, table: BlockTable) -> int:
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = table
        return sid

    def _index_full_blocks(self, t: BlockTable) -> None:
        bs = self.block_size
        while len(t.digests) < t.length // bs:
            i = len(t.digests)
            parent = t.digests[-1] if t.digests else b""
            d = _digest(parent, t.tokens[i * bs : (i + 1) * bs])
            t.digests.append(d)
            b = t.blocks[i]
            # A prefix computed twice at once keeps its first block; the copy stays unindexed.
            if self.prefix_cache and d not in self._cached and b not in self._block_digest:
                self._cached[d] = b
                self._block_digest[b] = d

    def _needs_copy(self, t: BlockTable, n: int) -> bool:
        return n > 0 and t.length % self.block_size != 0 and self._ref[t.blocks[-1]] > 1

    def _alloc(self, prefer: int | None) -> int:
        if (prefer is not None and prefer < self.num_blocks and self._ref[prefer] == 0
                and prefer not in self._lru):
            b = prefer
        else:
            b = None
            while self._free_heap:
                c = heapq.heappop(self._free_heap)
                if self._ref[c] == 0 and c not in self._lru:
                    b = c
                    break
            if b is None:  # only cached blocks are free: evict the least recently used one
                b, _ = self._lru.popitem(last=False)
                del self._cached[self._block_digest.pop(b)]
        self._ref[b] = 1
        self._num_free -= 1
        self._high_water = max(self._high_water, b + 1)
        return b

    def _release(self, b: int) -> None:
        self._ref[b] -= 1
        if self._ref[b] == 0:
            self._num_free += 1
            if b in self._block_digest:
                self._lru[b] = None  # most recently used last
            else:
                heapq.heappush(self._free_heap, b)
