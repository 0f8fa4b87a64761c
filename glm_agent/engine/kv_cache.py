"""The one paged KV cache every decode path uses (plain, batched, APAR): the tensor pool.

Keys and values of all streams live in one pool per layer, cut into fixed-size blocks of
`block_size` token slots. Which blocks each stream owns, their reference counts, forks and
copy-on-write are decided by `blocks.BlockManager` (plain Python, `cache.block_manager`); this
module holds the tensors, performs the copies that manager asks for, and runs attention:

- `new_stream()`, `fork(parent)` (a child sharing every block of the parent: nothing copied),
  `free(stream)`, `length`, `block_table`, `refcount`: the manager's, unchanged.
- `append(stream, n, tokens)` reserves slots for n new tokens; when the stream leaves a shared,
  partly filled block, that block's filled slots are copied to the stream's new block first.
  Given the token ids, the blocks they fill are indexed for prefix caching, and
  `attach_prefix(stream, ids)` lets a new stream start from the cached blocks of its prompt.
- An exhausted pool raises `CacheExhaustedError` saying how to make room.

Layout: `k[layer]` and `v[layer]` are `[kv_heads, slots, head_dim]` with slot = block *
block_size + offset. A stream whose blocks are consecutive (the normal single-stream case: the
allocator extends a stream with the next block when it is free) is read as a plain slice view,
so batch-1 decoding copies nothing; otherwise keys are gathered through the block table.
The pool grows on demand (doubling) up to `max_blocks`, so a 128k-token limit costs nothing
until it is used; pass `initial_blocks=max_blocks` to preallocate it. One extra block past the
capacity is scratch: the padding rows of a fixed-size (CUDA graph) step write there.

`AttnBatch` (built by `plan()`) is what one decoder forward needs to know about the streams it
advances: positions and write slots of the new tokens, and how to read each stream's keys.

Public API:
    PagedKVCache(num_layers, num_kv_heads, head_dim, *, max_blocks, block_size=16,
                 initial_blocks=None, device="cpu", dtype=torch.float32)
    .new_stream() -> int          .fork(parent: int) -> int        .free(stream: int) -> None
    .length(stream) -> int        .block_table(stream) -> list[int] .refcount(block) -> int
    .is_contiguous(stream) -> bool .live_streams -> list[int]
    .num_free_blocks -> int       .num_used_blocks -> int          .memory_bytes() -> int
    .append(stream, n, tokens=None) -> list[int]          (slots of the n new tokens)
    .attach_prefix(stream, ids) -> int                    (cached prompt ids reused)
    .num_cached_blocks -> int                             (free blocks still holding a prefix)
    .reserve(streams, n_new, tokens=None) -> (positions, slots)   (appends, all or none)
    .plan(streams, n_new, tokens=None) -> AttnBatch       (reserve, then describe the reads)
    .scratch_block -> int ; .generation -> int            (for captured decode steps)
    .write(layer, slots, k, v) ; .attend(layer, q, batch) -> out      (used by the decoder)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from glm_agent.engine.blocks import BlockManager, BlockTable

__all__ = ["PagedKVCache", "AttnBatch", "decode_reads"]


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


def decode_reads(block_tables: torch.Tensor, lengths: torch.Tensor, block_size: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a batched decode step reads keys: `block_tables` `[B, M]` (padded with any valid
    block) and `lengths` `[B]` give the slot of every key position `[B, M * block_size]` and the
    mask of the real ones `[B, 1, 1, M * block_size]`.

    Tensor ops only (no host values), so the eager batched step and the CUDA-graph step
    (`cuda_graphs.py`) compute their reads with this same function."""
    b, m = block_tables.shape
    offsets = torch.arange(block_size, device=block_tables.device)
    index = (block_tables[:, :, None] * block_size + offsets).view(b, m * block_size)
    keys = torch.arange(m * block_size, device=block_tables.device)
    return index, (keys[None, :] < lengths[:, None])[:, None, None, :]


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
        prefix_cache: bool = True,
    ) -> None:
        if max_blocks < 1 or block_size < 1:
            raise ValueError("max_blocks and block_size must be positive")
        self.block_manager = BlockManager(max_blocks, block_size, prefix_cache=prefix_cache)
        self.num_layers = num_layers
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.block_size = block_size
        self.max_blocks = max_blocks
        self.device = torch.device(device)
        self.dtype = dtype
        cap = min(max_blocks, initial_blocks or min(max_blocks, 64))
        self._capacity = cap
        # Bumped whenever the pool tensors are replaced (growth): captured graphs hold addresses.
        self.generation = 0
        # One block past the capacity is scratch: padding rows of a batched step write there.
        shape = (num_layers, num_kv_heads, (cap + 1) * block_size, head_dim)
        self.k = torch.zeros(shape, device=self.device, dtype=dtype)
        self.v = torch.zeros(shape, device=self.device, dtype=dtype)

    # ---- streams: the block manager's ---------------------------------------------------

    def new_stream(self) -> int:
        return self.block_manager.new_stream()

    def fork(self, parent: int) -> int:
        """A child sharing every block of `parent` (no copy); positions continue from it."""
        return self.block_manager.fork(parent)

    def free(self, stream: int) -> None:
        self.block_manager.free(stream)

    def attach_prefix(self, stream: int, ids: list[int]) -> int:
        """Start the empty `stream` from the cached blocks of `ids`' longest full-block prefix
        (at least one id is left to compute); returns how many ids are already in the cache."""
        return self.block_manager.attach_prefix(stream, ids)

    def length(self, stream: int) -> int:
        return self.block_manager.length(stream)

    def block_table(self, stream: int) -> list[int]:
        return self.block_manager.block_table(stream)

    def is_contiguous(self, stream: int) -> bool:
        return self.block_manager.is_contiguous(stream)

    def refcount(self, block: int) -> int:
        return self.block_manager.refcount(block)

    @property
    def live_streams(self) -> list[int]:
        return self.block_manager.live_streams

    @property
    def num_free_blocks(self) -> int:
        return self.block_manager.num_free_blocks

    @property
    def num_used_blocks(self) -> int:
        return self.block_manager.num_used_blocks

    @property
    def num_cached_blocks(self) -> int:
        return self.block_manager.num_cached_blocks

    @property
    def capacity_tokens(self) -> int:
        return self.max_blocks * self.block_size

    def memory_bytes(self) -> int:
        """Bytes of K/V actually referenced by live streams (blocks in use)."""
        per_block = 2 * self.num_layers * self.num_kv_heads * self.block_size * self.head_dim
        return self.num_used_blocks * per_block * self.k.element_size()

    # ---- slot reservation ---------------------------------------------------------------

    def append(self, stream: int, n: int, tokens: list[int] | None = None) -> list[int]:
        """Reserve slots for `n` new tokens of `stream`; returns their pool slots in order."""
        slots, cow = self.block_manager.append(stream, n, tokens)
        if self.block_manager.high_water > self._capacity:
            self._grow(self.block_manager.high_water)
        if cow is not None:  # the source block is still held by its other streams: intact
            bs = self.block_size
            src = slice(cow.src * bs, cow.src * bs + cow.count)
            dst = slice(cow.dst * bs, cow.dst * bs + cow.count)
            self.k[:, :, dst] = self.k[:, :, src]
            self.v[:, :, dst] = self.v[:, :, src]
        return slots

    @property
    def scratch_block(self) -> int:
        """A block no stream owns (it moves when the pool grows): padding rows write to it."""
        return self._capacity

    def _grow(self, min_blocks: int) -> None:
        cap = min(self.max_blocks, max(min_blocks, 2 * self._capacity))
        shape = (self.num_layers, self.num_kv_heads, (cap + 1) * self.block_size, self.head_dim)
        old = self._capacity * self.block_size
        for name in ("k", "v"):
            t = torch.zeros(shape, device=self.device, dtype=self.dtype)
            t[:, :, :old] = getattr(self, name)[:, :, :old]
            setattr(self, name, t)
        self._capacity = cap
        self.generation += 1

    def _slots(self, t: BlockTable) -> torch.Tensor:
        bs = self.block_size
        blocks = torch.tensor(t.blocks, dtype=torch.long)
        slots = (blocks[:, None] * bs + torch.arange(bs)).flatten()[: t.length]
        return slots.to(self.device)

    # ---- planning one forward pass --------------------------------------------------------

    def reserve(self, streams: list[int], n_new: list[int], tokens: list[list[int]] | None = None
                ) -> tuple[list[int], list[int]]:
        """Reserve slots for `n_new[i]` tokens of each stream (all or none): their positions and
        pool slots, flattened in stream order (`tokens[i]`: their ids, for prefix caching)."""
        if len(streams) != len(n_new) or len(set(streams)) != len(streams):
            raise ValueError("plan() needs distinct streams and one token count per stream")
        # Check room for all streams first, so a full pool leaves every stream untouched.
        total = sum(self.block_manager.blocks_needed(sid, n) for sid, n in zip(streams, n_new))
        self.block_manager.check_room(total, f"this step of {len(streams)} stream(s)")
        positions: list[int] = []
        slots: list[int] = []
        for i, (sid, n) in enumerate(zip(streams, n_new)):
            start = self.length(sid)
            slots += self.append(sid, n, None if tokens is None else tokens[i])
            positions += range(start, start + n)
        return positions, slots

    def plan(self, streams: list[int], n_new: list[int], tokens: list[list[int]] | None = None) -> AttnBatch:
        """Reserve slots for `n_new[i]` tokens of each stream and describe the reads
        (`tokens[i]`: their ids, for prefix caching)."""
        positions, slots = self.reserve(streams, n_new, tokens)
        tables = [self.block_manager.table(sid) for sid in streams]
        dev = self.device
        batch = AttnBatch(
            streams=list(streams),
            q_lens=list(n_new),
            k_lens=[t.length for t in tables],
            positions=torch.tensor(positions, dtype=torch.long, device=dev),
            slots=torch.tensor(slots, dtype=torch.long, device=dev),
            reads=[],
        )
        if len(streams) > 1 and all(n == 1 for n in n_new):
            width = max(len(t.blocks) for t in tables)
            padded = [t.blocks + [self.scratch_block] * (width - len(t.blocks)) for t in tables]
            batch.gather_index, batch.key_mask = decode_reads(
                torch.tensor(padded, dtype=torch.long, device=dev),
                torch.tensor(batch.k_lens, dtype=torch.long, device=dev),
                self.block_size,
            )
            return batch
        for t in tables:
            if t.contiguous:
                first = t.blocks[0] * self.block_size
                batch.reads.append((first, first + t.length))
            else:
                batch.reads.append(self._slots(t))
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
