"""Decode steps replayed as captured CUDA graphs over the paged KV cache.

At batch 1 a 40-layer decoder launches ~15 kernels a layer, and eager PyTorch spends more time
in Python and kernel launches than the GPU spends reading the weights. A captured CUDA graph
replays the whole step with one launch. A graph fixes every shape and address, so, as vLLM does,
steps are captured per bucket: the batch rounded up to one of `batch_sizes`, and the longest
stream's block count rounded up to a power of two (at least `min_blocks`).

Each step copies its inputs (token ids, positions, write slots, lengths, block tables) into its
bucket's static buffers with one host-to-device copy. Rows past the real batch are padding: they
write to the cache's scratch block, read one key, and their logits are dropped. Keys are read
through `kv_cache.decode_reads`, the function the eager batched step uses, so the graph computes
what the eager engine computes; the decoder and its (quantized) linears are the same modules.

Graphs are captured on the first step that needs their bucket and dropped when the pool grows
(its tensors move). `capture=False` runs the same static-buffer step without a graph: the CPU
tests check padding, buckets and block tables that way, and CUDA tests compare the two.

    graphs = DecodeGraphs(model, cache, max_context=4096)
    logits = graphs.run(tokens, positions, slots, block_tables, lengths)   # [B, vocab]
"""

from __future__ import annotations

import torch

from glm_agent.engine.kv_cache import AttnBatch, PagedKVCache, decode_reads

__all__ = ["DecodeGraphs", "DEFAULT_BATCH_SIZES"]

DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)


class _Bucket:
    """Static input buffers of one (batch, blocks) shape, its graph and its output."""

    def __init__(self, batch: int, blocks: int, device: torch.device) -> None:
        self.batch, self.blocks = batch, blocks
        width = 4 + blocks  # per row: id, position, slot, length, then the block table
        pin = device.type == "cuda"
        self.host = torch.zeros(batch, width, dtype=torch.long, pin_memory=pin)
        self.device_buf = torch.zeros(batch, width, dtype=torch.long, device=device)
        d = self.device_buf
        self.ids, self.positions, self.slots, self.lengths = d[:, 0], d[:, 1], d[:, 2], d[:, 3]
        self.tables = d[:, 4:]
        self.graph = None
        self.logits: torch.Tensor | None = None
        # The copy from pinned memory is asynchronous: the host buffer is rewritten only after it.
        self.copied = torch.cuda.Event() if pin else None

    def load(self, rows: list[tuple[int, int, int, int, list[int]]], scratch: int, block_size: int) -> None:
        if self.copied is not None:
            self.copied.synchronize()
        h = self.host
        for i, (tok, pos, slot, length, blocks) in enumerate(rows):
            h[i, :4] = torch.tensor((tok, pos, slot, length))
            h[i, 4 : 4 + len(blocks)] = torch.tensor(blocks)
            # Entries past a row's blocks are masked; they only need to be valid block ids.
            h[i, 4 + len(blocks) :] = scratch
        if len(rows) < self.batch:
            pad = h[len(rows) :]
            pad[:, :2] = 0
            pad[:, 2] = scratch * block_size
            pad[:, 3] = 1
            pad[:, 4:] = scratch
        self.device_buf.copy_(h, non_blocking=True)
        if self.copied is not None:
            self.copied.record()


class DecodeGraphs:
    def __init__(
        self,
        model: torch.nn.Module,
        cache: PagedKVCache,
        *,
        max_context: int,
        batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
        min_blocks: int = 16,
        capture: bool = True,
    ) -> None:
        if capture and cache.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device; use capture=False to run the static step eagerly")
        self.model = model
        self.cache = cache
        self.batch_sizes = tuple(sorted(set(batch_sizes)))
        self.max_stream_blocks = -(-max_context // cache.block_size)
        self.min_blocks = min_blocks
        self.capture = capture
        self.captures = 0  # graphs captured so far (re-captures after growth included)
        self._buckets: dict[tuple[int, int], _Bucket] = {}
        self._generation = cache.generation
        self._pool = None

    @property
    def max_batch(self) -> int:
        return self.batch_sizes[-1]

    def bucket_of(self, batch: int, blocks: int) -> tuple[int, int]:
        """The (batch, blocks) bucket a step of `batch` streams, the longest `blocks` long, runs in."""
        if batch > self.max_batch:
            raise ValueError(f"a captured step holds at most {self.max_batch} streams, not {batch}")
        b = next(s for s in self.batch_sizes if s >= batch)
        m = self.min_blocks
        while m < blocks:
            m *= 2
        return b, max(blocks, min(m, self.max_stream_blocks))

    def run(self, tokens: list[int], positions: list[int], slots: list[int],
            block_tables: list[list[int]], lengths: list[int]) -> torch.Tensor:
        """Logits `[B, vocab]` (model dtype) of one decode step; slots must already be reserved."""
        cache = self.cache
        if cache.generation != self._generation:  # the pool moved: every graph points at the old one
            self._buckets.clear()
            self._pool = None
            self._generation = cache.generation
        key = self.bucket_of(len(tokens), max(len(t) for t in block_tables))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = self._prepare(*key)
        rows = list(zip(tokens, positions, slots, lengths, block_tables))
        bucket.load(rows, cache.scratch_block, cache.block_size)
        if bucket.graph is not None:
            bucket.graph.replay()
            logits = bucket.logits
        else:
            logits = self._forward(bucket)
        return logits[: len(tokens)]

    def _forward(self, bucket: _Bucket) -> torch.Tensor:
        index, mask = decode_reads(bucket.tables, bucket.lengths, self.cache.block_size)
        batch = AttnBatch(streams=[], q_lens=[1] * bucket.batch, k_lens=[], positions=bucket.positions,
                          slots=bucket.slots, reads=[], gather_index=index, key_mask=mask)
        return self.model(bucket.ids, bucket.positions, self.cache, batch)

    def _prepare(self, batch: int, blocks: int) -> _Bucket:
        bucket = _Bucket(batch, blocks, self.cache.device)
        if not self.capture:
            return bucket
        # Every row padding: the warm-up runs write only to the scratch block.
        bucket.load([], self.cache.scratch_block, self.cache.block_size)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture: lazy weight packing, cuBLAS set-up
            for _ in range(2):
                self._forward(bucket)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):  # one memory pool shared by every bucket
            bucket.logits = self._forward(bucket)
        if self._pool is None:
            self._pool = graph.pool()
        bucket.graph = graph
        self.captures += 1
        return bucket
