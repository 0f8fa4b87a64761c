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
"""

from __future__ import annotations

import heapq
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


@dataclass(frozen=True)
class CopyOnWrite:
    """Copy the first `count` slots of block `src` into block `dst` before writing more."""

    src: int
    dst: int
    count: int


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._ref = [0] * num_blocks
        self._free_heap = list(range(num_blocks))  # lazy: entries with ref != 0 are stale
        self._num_free = num_blocks
        self._high_water = 0
        self._streams: dict[int, BlockTable] = {}
        self._next_id = 0

    # ---- streams --------------------------------------------------------------------------

    def new_stream(self) -> int:
        return self._add(BlockTable())

    def fork(self, parent: int) -> int:
        """A child sharing every block of `parent` (no block is allocated, so it cannot fail)."""
        p = self.table(parent)
        for b in p.blocks:
            self._ref[b] += 1
        return self._add(BlockTable(list(p.blocks), p.length, p.contiguous))

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

    def append(self, stream: int, n: int) -> tuple[list[int], CopyOnWrite | None]:
        """Reserve slots for `n` new tokens of `stream`: their slots in order, and the copy the
        pool must make first when the stream left a shared partial block (else None)."""
        t = self.table(stream)
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
        return [blocks[p // bs] * bs + p % bs for p in range(start, start + n)], cow

    # ---- internals ----------------------------------------------------------------------------

    def _add(self, table: BlockTable) -> int:
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = table
        return sid

    def _needs_copy(self, t: BlockTable, n: int) -> bool:
        return n > 0 and t.length % self.block_size != 0 and self._ref[t.blocks[-1]] > 1

    def _alloc(self, prefer: int | None) -> int:
        if prefer is not None and prefer < self.num_blocks and self._ref[prefer] == 0:
            b = prefer
        else:
            while True:
                b = heapq.heappop(self._free_heap)
                if self._ref[b] == 0:
                    break
        self._ref[b] = 1
        self._num_free -= 1
        self._high_water = max(self._high_water, b + 1)
        return b

    def _release(self, b: int) -> None:
        self._ref[b] -= 1
        if self._ref[b] == 0:
            self._num_free += 1
            heapq.heappush(self._free_heap, b)
