"""APAR: auto-parallel auto-regressive decoding on top of the engine's paged KV cache.

An APAR-tuned model (Liu et al., "APAR: LLMs Can Do Auto-Parallel Auto-Regressive Decoding",
arXiv:2401.06761; code and checkpoints: github.com/THUDM/APAR) writes the "head" of each list item or
paragraph, then emits `[Fork]` and goes on with the next item. The runtime then starts a
*child* stream that writes that item's details:

- the child sees the prompt and its parent up to and including the `[Fork]` (its KV blocks are
  the parent's, shared through the cache's reference counts, nothing copied), never its
  siblings nor the parent's later text; its positions continue from the fork point;
- its first token is `[Child]`, forced by the runtime (the model never samples `[Child]`);
- every live stream advances by one token per step, all in one batched forward;
- a stream that emits a stop token (EOS) is finished and its blocks are freed at once.

Rules from the reference decoder (THUDM/APAR `vs.py` / vLLM fork): `[Child]` is always masked;
`[Fork]` is masked right after `[Fork]` or `[Child]` (no two forks in a row), when the number
of live streams has reached `max_streams`, and when the stream's depth has reached `max_depth`
(root = depth 1; the default 2 allows one level of children, as the reference).

The answer is reassembled in document order: each child's tokens sit right after its parent's
`[Fork]` (that is how the training data was cut, so no text heuristics are needed). Tokens are
yielded in that order as soon as they are final: a prefix is final when no stream before it in
document order is still live. Control tokens and the children's stop tokens are dropped; the
root's stop token is yielded last, exactly like `Engine.generate`, so with a model that never
forks APAR yields the very same tokens as normal decoding.

`max_new_tokens` caps the tokens of all streams together (the reference caps the sum too).

Driving a fork schedule without an APAR-trained model (tests, benchmarks): `ForcedSchedule`
says which token a stream (named by its path: root `()`, first child of the root `(0,)`, ...)
emits at a given index of its own tokens (a child's index 0 is its `[Child]`). Forced tokens
obey the same rules as sampled ones: a forced `[Fork]` the caps forbid is not taken.

    tokens = AparTokens.from_tokenizer(tok)            # "[Fork]"/"[Child]" (or the reference's
                                                       #  "[SplitMask]"/"[SplitSop]")
    dec = AparDecoder(engine, tokens, max_streams=32, max_depth=2, schedule=None)
    for tok in dec.generate(prompt_ids, max_new_tokens, SamplingParams(...), stop_token_ids={eos}):
        ...                                            # document order
    dec.stats                                          # steps, forks, peak streams / KV bytes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Mapping, Union

from glm_agent.engine.errors import AparError
from glm_agent.engine.params import SamplingParams

__all__ = [
    "AparTokens",
    "AparDecoder",
    "AparStream",
    "AparStats",
    "ForcedSchedule",
    "FORK",
    "STOP",
]

# Schedule markers, resolved by the decoder to the fork id / the first stop id.
FORK = "fork"
STOP = "stop"
Path = tuple  # a stream's path in the tree: () root, (i,) i-th child of the root, ...
Forced = Union[int, str, None]

_DEFAULT_NAMES = (("[Fork]", "[Child]"), ("[SplitMask]", "[SplitSop]"))


@dataclass(frozen=True)
class AparTokens:
    """The two control token ids of an APAR-tuned model."""

    fork_id: int
    child_id: int

    def __post_init__(self) -> None:
        if self.fork_id == self.child_id:
            raise ValueError("the [Fork] and [Child] tokens must be different ids")

    @classmethod
    def from_tokenizer(cls, tokenizer, fork: str | None = None, child: str | None = None) -> "AparTokens":
        """Look the control tokens up by name; default names: `[Fork]`/`[Child]`, then the
        reference checkpoints' `[SplitMask]`/`[SplitSop]`."""
        pairs = [(fork, child)] if fork or child else list(_DEFAULT_NAMES)
        for f, c in pairs:
            fid = tokenizer.token_to_id(f or "[Fork]")
            cid = tokenizer.token_to_id(c or "[Child]")
            if fid is not None and cid is not None:
                return cls(fid, cid)
        names = " or ".join(f"{f or '[Fork]'}/{c or '[Child]'}" for f, c in pairs)
        raise AparError(
            f"APAR needs a model fine-tuned with the control tokens {names}, and this tokenizer "
            "has neither pair. Use an APAR-tuned checkpoint (see docs/apar.md), name "
            "its tokens explicitly, or decode without apar."
        )


class ForcedSchedule:
    """Tokens forced at given points of given streams, for models that were not APAR-tuned.

    `tokens[path][index]` is what the stream at `path` emits as its token number `index`
    (an id, `FORK` or `STOP`). `forks[path]` / `ends[path]` are shorthands: indices where the
    stream forks, and the index of its stop token. With `sampled_forks=False` (default) the
    model itself may not fork: `[Fork]` is masked wherever the schedule does not force it;
    with `sampled_stops=False` the stop tokens are masked likewise (exact lengths on a random
    model).
    """

    def __init__(
        self,
        tokens: Mapping[Path, Mapping[int, Forced]] | None = None,
        *,
        forks: Mapping[Path, Iterable[int]] | None = None,
        ends: Mapping[Path, int] | None = None,
        sampled_forks: bool = False,
        sampled_stops: bool = True,
    ) -> None:
        self.table: dict[Path, dict[int, Forced]] = {}
        for path, row in (tokens or {}).items():
            self.table.setdefault(tuple(path), {}).update(row)
        for path, idx in (forks or {}).items():
            for i in idx:
                self.table.setdefault(tuple(path), {})[int(i)] = FORK
        for path, i in (ends or {}).items():
            self.table.setdefault(tuple(path), {})[int(i)] = STOP
        self.sampled_forks = sampled_forks
        self.sampled_stops = sampled_stops

    def forced(self, path: Path, index: int) -> Forced:
        row = self.table.get(path)
        return None if row is None else row.get(index)

    @classmethod
    def structured(cls, items: int, detail_tokens: int, head_tokens: int = 4) -> "ForcedSchedule":
        """A list answer of `items` items: the root writes `head_tokens` tokens of each item's
        head then `[Fork]`, and stops after the last one; child i writes `detail_tokens`
        tokens after its `[Child]`, then stops. Tokens per answer: see `total_tokens`."""
        step = head_tokens + 1
        forks = [step * i + head_tokens for i in range(items)]
        ends = {(): step * items}
        ends.update({(i,): 1 + detail_tokens for i in range(items)})
        return cls(forks={(): forks}, ends=ends, sampled_stops=False)

    @staticmethod
    def total_tokens(items: int, detail_tokens: int, head_tokens: int = 4) -> int:
        """Tokens `structured(...)` generates, stop tokens and control tokens included."""
        return (head_tokens + 1) * items + 1 + items * (detail_tokens + 2)


@dataclass
class AparStream:
    """One node of the paragraph tree: a stream of tokens with its own KV block table."""

    path: Path
    depth: int
    prefix: list[int]  # ids this stream sees before its own tokens (prompt + ancestors)
    sampler: object
    cache_id: int | None = None
    tokens: list[int] = field(default_factory=list)
    # (offset in `tokens` right after the [Fork], child) in fork order
    children: list[tuple[int, "AparStream"]] = field(default_factory=list)
    done: bool = False
    finish: str | None = None  # "stop" | "length" | "cancelled"

    @property
    def visible(self) -> list[int]:
        """Every id this stream has attended to so far (what a fresh cache would be fed)."""
        return self.prefix + self.tokens


@dataclass
class AparStats:
    steps: int = 0  # batched forwards after the prompt
    tokens: int = 0  # tokens of all streams (control and stop tokens included)
    forks: int = 0
    refused_forks: int = 0  # forced forks a rule forbade
    peak_streams: int = 0
    peak_blocks: int = 0
    peak_kv_bytes: int = 0
    finish_reason: str | None = None


class _Cursor:
    """Walks the tree in document order and releases tokens once nothing before them is live."""

    def __init__(self, root: AparStream, drop: Callable[[AparStream, int], bool]) -> None:
        self.stack: list[list] = [[root, 0, 0]]  # node, next token index, next child index
        self.drop = drop

    def advance(self) -> list[int]:
        out: list[int] = []
        stack = self.stack
        while stack:
            top = stack[-1]
            node, i, c = top
            if c < len(node.children) and node.children[c][0] == i:
                top[2] += 1
                stack.append([node.children[c][1], 0, 0])
                continue
            if i < len(node.tokens):
                top[1] += 1
                tok = node.tokens[i]
                if not self.drop(node, tok):
                    out.append(tok)
                continue
            if node.done:
                stack.pop()
                continue
            break  # a live stream: everything after it in document order must wait
        return out


class AparDecoder:
    """Decodes one request as a tree of streams on `engine` (see the module docstring).

    on_step(streams, logits): called after every forward with the streams it advanced and
    their logits `[B, vocab]` (before masking), for tests and tracing.
    on_fork(parent, child): called when a child stream has been forked in the cache.
    """

    def __init__(
        self,
        engine,
        tokens: AparTokens,
        *,
        max_streams: int = 32,
        max_depth: int = 2,
        schedule: ForcedSchedule | None = None,
        keep_control: bool = False,
        on_step: Callable[[list[AparStream], object], None] | None = None,
        on_fork: Callable[[AparStream, AparStream], None] | None = None,
    ) -> None:
        if max_streams < 1 or max_depth < 1:
            raise ValueError("max_streams and max_depth must be >= 1")
        vocab = engine.vocab_size
        for name, tid in (("fork", tokens.fork_id), ("child", tokens.child_id)):
            if not 0 <= tid < vocab:
                raise ValueError(f"APAR {name} token id {tid} is outside the vocabulary ({vocab})")
        self.engine = engine
        self.tokens = tokens
        self.max_streams = max_streams
        self.max_depth = max_depth
        self.schedule = schedule
        self.keep_control = keep_control
        self.on_step = on_step
        self.on_fork = on_fork
        self.stats = AparStats()
        self.root: AparStream | None = None

    # ---- public -----------------------------------------------------------------------------
    def generate(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        sampling: SamplingParams | None = None,
        stop_token_ids: Iterable[int] = (),
    ) -> Iterator[int]:
        """Yield the answer's token ids in document order (see the module docstring);
        `max_new_tokens` caps the tokens of all streams together.

        Closing the iterator frees every stream's blocks at once."""
        from glm_agent.engine.sampling import Sampler  # torch: imported only to decode

        prompt_ids = self.engine.check_request(prompt_ids, max_new_tokens, whole=False)
        sampler = Sampler(sampling, self.engine.vocab_size, self.engine.device)
        return self._generate(prompt_ids, max_new_tokens, sampler, frozenset(stop_token_ids))

    # ---- the loop ---------------------------------------------------------------------------
    def _generate(self, prompt_ids, max_new_tokens, sampler, stops) -> Iterator[int]:
        engine, cache = self.engine, self.engine.cache
        self.stats = st = AparStats()
        sampler.observe(prompt_ids)
        root = self.root = AparStream((), 1, prompt_ids, sampler)
        fork_id, child_id = self.tokens.fork_id, self.tokens.child_id
        control = {fork_id, child_id}

        def drop(node: AparStream, tok: int) -> bool:
            if tok in control:
                return not self.keep_control
            return tok in stops and node is not root  # a child's EOS only ends that stream

        cursor = _Cursor(root, drop)
        live: list[AparStream] = []
        budget = max_new_tokens
        fast = sampler.greedy and sampler.params.repetition_penalty == 1.0
        try:
            if budget == 0:
                st.finish_reason = "length"
                return
            root.cache_id = engine.new_stream()
            live.append(root)
            logits = engine.prefill(root.cache_id, prompt_ids)[None]
            self._note_peak(live)
            fed = [root]
            while True:
                if self.on_step is not None:
                    self.on_step(list(fed), logits.clone())
                chosen = self._choose(fed, logits, live, fast, stops)
                newborn: list[AparStream] = []
                for node, tok in zip(fed[: max(budget, 0)], chosen):  # never past the budget
                    node.tokens.append(tok)
                    st.tokens += 1
                    budget -= 1
                    if tok in stops:
                        self._finish(node, "stop", live)
                    elif tok == fork_id:
                        newborn.append(node)  # forked once the [Fork] is in its cache
                yield from cursor.advance()
                if budget <= 0:
                    break
                # Streams that still need a forward; a full context ends the stream.
                feed = []
                for node in list(live):
                    if cache.length(node.cache_id) >= engine.max_context:
                        self._finish(node, "length", live)
                    else:
                        feed.append(node)
                if not feed:
                    break
                sids = [n.cache_id for n in feed]
                logits = engine.decode_step(sids, [n.tokens[-1] for n in feed])
                st.steps += 1
                fed = list(feed)
                # Fork after the forward: the child's blocks then hold the parent's [Fork].
                for parent in newborn:
                    if budget <= 0:
                        break
                    if parent.done:
                        continue
                    child = self._fork(parent, live)
                    # The child's first token is forced: it is fed in the next step.
                    child.tokens.append(child_id)
                    child.sampler.observe([child_id])
                    st.tokens += 1
                    budget -= 1
                self._note_peak(live)
                if budget <= 0:
                    break
            st.finish_reason = "stop" if root.finish == "stop" and not live else "length"
        finally:
            reason = "cancelled" if st.finish_reason is None else "length"
            for node in list(live):
                self._finish(node, reason, live)
            if st.finish_reason is None:
                st.finish_reason = "cancelled"
        yield from cursor.advance()  # the rest, now that every stream is finished

    def _choose(self, fed, logits, live, fast, stops) -> list[int]:
        """One token per stream that was just advanced: forced, else sampled under the rules."""
        import torch

        fork_id, child_id = self.tokens.fork_id, self.tokens.child_id
        sched = self.schedule
        stop_id = min(stops) if stops else None
        n_live = len(live)
        may_fork = [
            (not node.tokens or node.tokens[-1] not in (fork_id, child_id))
            and n_live < self.max_streams
            and node.depth < self.max_depth
            for node in fed
        ]
        with torch.inference_mode():  # logits are inference tensors: mask them in place
            x = logits
            x[:, child_id] = float("-inf")  # [Child] is only ever forced
            if sched is not None and not sched.sampled_stops and stops:
                x[:, list(stops)] = float("-inf")
            sampled_forks = sched is None or sched.sampled_forks
            ban = [not (ok and sampled_forks) for ok in may_fork]
            if any(ban):  # one masked write for the whole batch (no per-row launches)
                x[:, fork_id].masked_fill_(torch.tensor(ban, device=x.device), float("-inf"))
            picks = x.argmax(-1).tolist() if fast else None
            out = []
            for j, node in enumerate(fed):
                tok = None
                forced = sched.forced(node.path, len(node.tokens)) if sched is not None else None
                if forced == FORK or forced == fork_id:
                    if may_fork[j]:
                        tok = fork_id
                    else:
                        self.stats.refused_forks += 1
                elif forced == STOP:
                    if stop_id is None:
                        raise ValueError("the schedule forces a stop but no stop_token_ids were given")
                    tok = stop_id
                elif forced is not None and forced != child_id:
                    tok = int(forced)
                if tok is None:
                    if fast and (picks[j] != fork_id or n_live < self.max_streams):
                        tok = picks[j]
                    else:
                        if n_live >= self.max_streams:  # earlier rows' forks filled the cap
                            x[j, fork_id] = float("-inf")
                        tok = int(x[j].argmax()) if fast else node.sampler.sample(x[j])
                elif not fast:
                    node.sampler.observe([tok])
                if tok == fork_id:
                    n_live += 1  # the child about to be created counts against the cap
                    may_fork = [ok and n_live < self.max_streams for ok in may_fork]
                out.append(tok)
        return out

    def _fork(self, parent: AparStream, live: list[AparStream]) -> AparStream:
        path = parent.path + (len(parent.children),)
        child = AparStream(
            path,
            parent.depth + 1,
            parent.visible,
            parent.sampler.fork() if hasattr(parent.sampler, "fork") else parent.sampler,
        )
        child.cache_id = self.engine.fork(parent.cache_id)
        parent.children.append((len(parent.tokens), child))
        live.append(child)
        self.stats.forks += 1
        if self.on_fork is not None:
            self.on_fork(parent, child)
        return child

    def _finish(self, node: AparStream, reason: str, live: list[AparStream]) -> None:
        if node.done:
            return
        node.done = True
        node.finish = reason
        if node.cache_id is not None:
            self.engine.free(node.cache_id)  # its private blocks go back to the pool now
        if node in live:
            live.remove(node)

    def _note_peak(self, live) -> None:
        st, cache = self.stats, self.engine.cache
        st.peak_streams = max(st.peak_streams, len(live))
        if cache.num_used_blocks > st.peak_blocks:
            st.peak_blocks = cache.num_used_blocks
            st.peak_kv_bytes = cache.memory_bytes()
