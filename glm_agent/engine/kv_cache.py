"""The one paged KV cache every decode path uses (plain, batched, APAR).

Keys and values of all streams live in one pool per layer, cut into fixed-size blocks of
`block_size` token slots. Each stream (one sequence being decoded) owns a *block table*: the
list of pool blocks that hold its tokens, in order. Blocks carry reference counts:

- `new_stream()` starts an empty stream; `fork(parent)` makes a child whose table is a copy of
  the parent's (every block's count +1, nothing copied), so the child sees the prompt and the
  parent up to the fork, and its positions continue from there (APAR, research §1.4/§1.6).
- `append(stream, n)` reserves slots for n new tokens. Full shared blocks are never written
  again; the first write into a *shared, partly filled* last block copies that block only
  (copy-on-write), so a sibling never writes a block another stream reads.
- `free(stream)` drops the stream's references at once; blocks whose count reaches 0 are free.
- An exhausted pool raises `CacheExhaustedError` saying how to make room.

Layout: `k[layer]` and `v[layer]` are `[kv_heads, slots, head_dim]` with slot = block *
block_size + offset. A stream whose blocks are consecutive (the normal single-stream case: the
allocator extends a stream with the next block when it is free) is read as a plain slice view,
so batch-1 decoding copies nothing; otherwise keys are gathered through the block table.
The pool grows on demand (doubling) up to `max_blocks`, so a 128k-token limit costs nothing
until it is used; pass `initial_blocks=max_blocks` to preallocate (static addresses for CUDA
graphs).

`AttnBatch` (built by `plan()`) is what one decoder forward needs to know about the streams it
advances: positions and write slots of the new tokens, and how to read each stream's keys.

Public API:
    PagedKVCache(num_layers, num_kv_heads, head_dim, *, max_blocks, block_size=16,
                 initial_blocks=None, device="cpu", dtype=torch.float32)
    .new_stream() -> int          .fork(parent: int) -> int        .free(stream: int) -> None
    .length(stream) -> int        .block_table(stream) -> list[int] .refcount(block) -> int
    .num_free_blocks -> int       .num_used_blocks -> int          .live_streams -> list[int]
    .append(stream, n) -> list[int]                       (slots of the n new tokens)
    .plan(streams: list[int], n_new: list[int]) -> AttnBatch   (appends, then describes reads)
    .write(layer, slots, k, v) ; .attend(layer, q, batch) -> out      (used by the decoder)
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from glm_agent.engine.errors import CacheExhaustedError

__all__ = ["PagedKVCache", "AttnBatch"]


@dataclass
class _Stream:
    blocks: list[int] = field(default_factory=list)
    length: int = 0
    # True while blocks are consecutive pool blocks: then keys are a slice view (no gather).
    contiguous: bool = True


@dataclass
class AttnBatch:
    """How one forward pass reads and writes the cache for the streams it advances.

    Tokens of all streams are flattened into N rows in stream order (`q_lens[i]` rows each).
    """

    streams: list[int]
    q_lens: list[int]
    k_lens: list[int]  # cache length of each stream after this step's tokens
    positions: torch.Tensor  # [N] RoPE position of each new token
    slots: torch.Tensor  # [N] pool slot each new token's k/v is written to
    # Per stream: (start, end) slot range when contiguous, else a LongTensor of slots.
    reads: list
    # Batched decode (every q_len == 1, B > 1): padded gather index [B, Kmax] + key mask.
    gather_index: torch.Tensor | None = None
    key_mask: torch.Tensor | None = None

    @property
    def num_tokens(self) -> int:
        return int(sum(self.q_lens))


class PagedKVCache:
    def __init__(
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        max_blocks: int,
        block_size: int = 16,
        initial_blocks: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if max_blocks < 1 or block_size < 1:
            raise ValueError("max_blocks and block_size must be positive")
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.device = torch.device(device)
        self.dtype = dtype
        cap = min(max_blocks, initial_blocks or min(max_blocks, 64))
        self._capacity = cap
        shape = (num_layers, num_kv_heads, cap * block_size, head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=dtype)
        self._ref = [0] * max_blocks
        self._free_heap = list(range(max_blocks))  # lazy: entries with ref != 0 are stale
        self._num_free = max_blocks
        self._streams: dict[int, _Stream] = {}
        self._next_id = 0

    # ---- stream bookkeeping -------------------------------------------------------------

    def new_stream(self) -> int:
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = _Stream()
        return sid

    def fork(self, parent: int) -> int:
        """A child sharing every block of `parent` (no copy); positions continue from it."""
        p = self._get(parent)
        for b in p.blocks:
            self._ref[b] += 1
        sid = self._next_id
        self._next_id += 1
        self._streams[sid] = _Stream(list(p.blocks), p.length, p.contiguous)
        return sid

    def free(self, stream: int) -> None:
        s = self._streams.pop(stream, None)
        if s is None:
            return  # freeing twice is harmless (generator close after an error, ...)
        for b in s.blocks:
            self._release(b)

    def length(self, stream: int) -> int:
        return self._get(stream).length

    def block_table(self, stream: int) -> list[int]:
        return list(self._get(stream).blocks)

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
        return self.max_blocks - self._num_free

    @property
    def capacity_tokens(self) -> int:
        return self.max_blocks * self.block_size

    def memory_bytes(self) -> int:
        """Bytes of K/V actually referenced by live streams (blocks in use)."""
        per_block = 2 * self.num_layers * self.num_kv_heads * self.block_size * self.head_dim
        return self.num_used_blocks * per_block * self.k.element_size()

    # ---- slot reservation ---------------------------------------------------------------

    def append(self, stream: int, n: int) -> list[int]:
        """Reserve slots for `n` new tokens of `stream`; returns their pool slots in order."""
        s = self._get(stream)
        bs = self.block_size
        need_new, cow = self._needs(s, n)
        self._check_room(need_new + int(cow), f"stream {stream}")
        if cow:
            self._copy_on_write(s)
        for _ in range(need_new):
            prev = s.blocks[-1] if s.blocks else None
            b = self._alloc(prefer=None if prev is None else prev + 1)
            if prev is not None and b != prev + 1:
                s.contiguous = False
            s.blocks.append(b)
        start = s.length
        s.length += n
        blocks = s.blocks
        return [blocks[p // bs] * bs + p % bs for p in range(start, start + n)]

    def _needs(self, s: _Stream, n: int) -> tuple[int, bool]:
        need_new = -(-(s.length + n) // self.block_size) - len(s.blocks)
        cow = s.length % self.block_size != 0 and n > 0 and self._ref[s.blocks[-1]] > 1
        return need_new, cow

    def _check_room(self, blocks: int, who: str) -> None:
        if blocks > self._num_free:
            raise CacheExhaustedError(
                f"KV cache full: {who} needs {blocks} more blocks of {self.block_size} tokens "
                f"but only {self._num_free} of {self.max_blocks} are free "
                f"({len(self._streams)} live streams). Free finished streams, shorten the "
                "prompt or max_new_tokens, or build the engine with a larger cache_tokens."
            )

    def _copy_on_write(self, s: _Stream) -> None:
        old = s.blocks[-1]
        prev = s.blocks[-2] if len(s.blocks) > 1 else None
        new = self._alloc(prefer=None if prev is None else prev + 1)
        filled = s.length % self.block_size
        src = slice(old * self.block_size, old * self.block_size + filled)
        dst = slice(new * self.block_size, new * self.block_size + filled)
        self.k[:, :, dst] = self.k[:, :, src]
        self.v[:, :, dst] = self.v[:, :, src]
        self._release(old)
        s.blocks[-1] = new
        if prev is not None and new != prev + 1:
            s.contiguous = False

    def _alloc(self, prefer: int | None) -> int:
        if prefer is not None and prefer < self.max_blocks and self._ref[prefer] == 0:
            b = prefer
        else:
            while True:
                b = heapq.heappop(self._free_heap)
                if self._ref[b] == 0:
                    break
        self._ref[b] = 1
        self._num_free -= 1
        if b >= self._capacity:
            self._grow(b + 1)
        return b

    def _release(self, b: int) -> None:
        self._ref[b] -= 1
        if self._ref[b] == 0:
            self._num_free += 1
            heapq.heappush(self._free_heap, b)

    def _grow(self, min_blocks: int) -> None:
        cap = min(self.max_blocks, max(min_blocks, 2 * self._capacity))
        shape = (self.num_layers, self.num_kv_heads, cap * self.block_size, self.head_dim)
        old = self._capacity * self.block_size
        for name in ("k", "v"):
            t = torch.zeros(shape, device=self.device, dtype=self.dtype)
            t[:, :, :old] = getattr(self, name)
            setattr(self, name, t)
        self._capacity = cap

    def _get(self, stream: int) -> _Stream:
        try:
            return self._streams[stream]
        except KeyError:
            raise KeyError(f"unknown or freed KV-cache stream {stream}") from None

    def _slots(self, s: _Stream) -> torch.Tensor:
        bs = self.block_size
        blocks = torch.tensor(s.blocks, dtype=torch.long)
        slots = (blocks[:, None] * bs + torch.arange(bs)).flatten()[: s.length]
        return slots.to(self.device)

    # ---- planning one forward pass --------------------------------------------------------

    def plan(self, streams: list[int], n_new: list[int]) -> AttnBatch:
        """Reserve slots for `n_new[i]` tokens of each stream and describe the reads."""
        if len(streams) != len(n_new) or len(set(streams)) != len(streams):
            raise ValueError("plan() needs distinct streams and one token count per stream")
        # Check room for all streams first, so a full pool leaves every stream untouched.
        total = 0
        for sid, n in zip(streams, n_new):
            need_new, cow = self._needs(self._get(sid), n)
            total += need_new + int(cow)
        self._check_room(total, f"this step of {len(streams)} stream(s)")
        positions: list[int] = []
        slots: list[int] = []
        for sid, n in zip(streams, n_new):
            start = self.length(sid)
            slots += self.append(sid, n)
            positions += range(start, start + n)
        reads = []
        k_lens = []
        for sid in streams:
            s = self._streams[sid]
            k_lens.append(s.length)
            if s.contiguous:
                first = s.blocks[0] * self.block_size
                reads.append((first, first + s.length))
            else:
                reads.append(self._slots(s))
        dev = self.device
        batch = AttnBatch(
            streams=list(streams),
            q_lens=list(n_new),
            k_lens=k_lens,
            positions=torch.tensor(positions, dtype=torch.long, device=dev),
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            reads=reads,
        )
        if len(streams) > 1 and all(n == 1 for n in n_new):
            kmax = max(k_lens)
            index = torch.zeros(len(streams), kmax, dtype=torch.long, device=dev)
            for i, r in enumerate(reads):
                if isinstance(r, tuple):
                    index[i, : k_lens[i]] = torch.arange(r[0], r[1], device=dev)
                else:
                    index[i, : k_lens[i]] = r
            lens = torch.tensor(k_lens, device=dev)
            batch.gather_index = index
            batch.key_mask = (torch.arange(kmax, device=dev)[None, :] < lens[:, None])[
                :, None, None, :
            ]
        return batch

    # ---- used by the decoder's attention --------------------------------------------------

    def write(self, layer: int, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store new keys/values `[N, kv_heads, head_dim]` at `slots` `[N]`."""
        self.k[layer].index_copy_(1, slots, k.transpose(0, 1).to(self.dtype))
        self.v[layer].index_copy_(1, slots, v.transpose(0, 1).to(self.dtype))

    def _read(self, layer: int, r) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(r, tuple):
            return self.k[layer, :, r[0] : r[1]], self.v[layer, :, r[0] : r[1]]
        return self.k[layer].index_select(1, r), self.v[layer].index_select(1, r)

    def attend(self, layer: int, q: torch.Tensor, batch: AttnBatch) -> torch.Tensor:
        """Causal attention of new queries `[N, heads, D]` over each stream's cached keys.

        Returns `[N, heads, D]`. The new tokens' k/v must already be written.
        """
        n_heads, d = q.shape[1], q.shape[2]
        hk = self.num_kv_heads
        g = n_heads // hk
        if batch.gather_index is not None:  # batched decode: one query per stream
            b, kmax = batch.gather_index.shape
            idx = batch.gather_index.flatten()
            k = self.k[layer].index_select(1, idx).view(hk, b, kmax, d).transpose(0, 1)
            v = self.v[layer].index_select(1, idx).view(hk, b, kmax, d).transpose(0, 1)
            qg = q.view(b, hk, g, d)  # query heads of one KV group become rows (no repeat)
            out = F.scaled_dot_product_attention(qg, k, v, attn_mask=batch.key_mask)
            return out.reshape(b, n_heads, d)
        outs = []
        row = 0
        for n, klen, r in zip(batch.q_lens, batch.k_lens, batch.reads):
            qs = q[row : row + n]
            row += n
            k, v = self._read(layer, r)
            if n == 1:
                qg = qs.view(1, hk, g, d)
                out = F.scaled_dot_product_attention(qg, k[None], v[None])
                outs.append(out.reshape(1, n_heads, d))
                continue
            qs = qs.transpose(0, 1)[None]  # [1, H, n, D]
            if n == klen:
                out = F.scaled_dot_product_attention(
                    qs, k[None], v[None], is_causal=True, enable_gqa=True
                )
            else:  # new tokens after a cached prefix: query i sees keys <= past + i
                past = klen - n
                mask = torch.arange(klen, device=q.device)[None, :] <= (
                    past + torch.arange(n, device=q.device)[:, None]
                )
                out = F.scaled_dot_product_attention(
                    qs, k[None], v[None], attn_mask=mask, enable_gqa=True
                )
            outs.append(out[0].transpose(0, 1))
        return outs[0] if len(outs) == 1 else torch.cat(outs)
