"""APAR decoding on a real (random-weight) GLM decoder: exactness against fresh-cache decoding,
block accounting and sharing, no-fork equivalence, the fork rules, document-order streaming."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from _random_engine import random_engine

from glm_agent.engine.apar import AparDecoder, AparTokens, ForcedSchedule
from glm_agent.engine.errors import AparError
from glm_agent.engine.params import SamplingParams

PROMPT = [5, 17, 200, 3, 99, 42, 7, 255, 128, 64, 33]
EOS = 1


@pytest.fixture(scope="module")
def engine():
    # block_size 4: many block boundaries, so forks land in partly filled blocks (copy on write)
    return random_engine("glm4", max_context=256, block_size=4)


@pytest.fixture(scope="module")
def greedy_ref(engine):
    return list(engine.generate(PROMPT, 40))


PENALTY = SamplingParams(repetition_penalty=1.3)


@pytest.fixture(scope="module")
def tokens(engine, greedy_ref):
    # Control ids the random model never picks greedily, so masking them changes nothing.
    seen = set(greedy_ref) | set(engine.generate(PROMPT, 30, PENALTY)) | set(PROMPT)
    unused = [t for t in range(2, 256) if t not in seen]
    return AparTokens(fork_id=unused[-1], child_id=unused[-2])


def _nodes(root):
    out = [root]
    for _, child in root.children:
        out += _nodes(child)
    return out


class _ForkHappy:
    """The engine with [Fork] boosted in every logit row: a model that always wants to fork."""

    def __init__(self, engine, fork_id):
        self._e, self._fork = engine, fork_id

    def __getattr__(self, name):
        return getattr(self._e, name)

    def _boost(self, x):
        x = x.clone()
        x[..., self._fork] += 1e3
        return x

    def prefill(self, sid, ids):
        return self._boost(self._e.prefill(sid, ids))

    def decode_step(self, sids, toks):
        return self._boost(self._e.decode_step(sids, toks))


# ---- equivalence and exactness ---------------------------------------------------------------


def test_no_fork_apar_equals_normal_greedy(engine, tokens, greedy_ref):
    dec = AparDecoder(engine, tokens)
    got = list(dec.generate(PROMPT, 40))
    assert got == greedy_ref and len(set(got)) > 5
    assert dec.stats.forks == 0 and dec.stats.finish_reason == "length"
    # with a stop token: the stop is yielded last, as Engine.generate does
    stop = greedy_ref[12]
    ref = list(engine.generate(PROMPT, 40, stop_token_ids={stop}))
    got = list(dec.generate(PROMPT, 40, stop_token_ids={stop}))
    assert got == ref and got[-1] == stop and dec.stats.finish_reason == "stop"
    # the non-fast path (repetition penalty) too
    assert list(dec.generate(PROMPT, 30, PENALTY)) == list(engine.generate(PROMPT, 30, PENALTY))
    assert engine.cache.num_used_blocks == 0


def test_every_stream_logits_equal_fresh_decoding_of_its_visible_sequence(engine, tokens):
    # forks right at a block boundary (prompt 11 + 5 tokens = 16; child 0 at 16 + 4 = 20) and
    # mid-block (copy on write), grandchildren, streams finishing at different times
    sched = ForcedSchedule(
        forks={(): [4, 7, 11], (0,): [3], (1,): [5]},
        ends={(): 16, (0,): 9, (1,): 12, (2,): 4, (0, 0): 6, (1, 0): 3},
        sampled_stops=False,
    )
    checked = {}

    def on_step(streams, logits):
        for node, row in zip(streams, logits):
            ref = engine.forward_logits(node.visible)[-1]
            torch.testing.assert_close(row, ref, atol=1e-4, rtol=1e-4)
            checked[node.path] = checked.get(node.path, 0) + 1

    dec = AparDecoder(engine, tokens, max_depth=3, schedule=sched, on_step=on_step)
    out = list(dec.generate(PROMPT, 200, stop_token_ids={EOS}))
    assert dec.stats.forks == 5 and dec.stats.finish_reason == "stop"
    assert set(checked) == {(), (0,), (1,), (2,), (0, 0), (1, 0)}
    assert sum(checked.values()) == dec.stats.tokens - 5  # one row per token but the 5 [Child]
    # a child's first position follows its fork point: its visible prefix ends with [Fork]
    for node in _nodes(dec.root)[1:]:
        assert node.prefix[-1] == tokens.fork_id and node.tokens[0] == tokens.child_id
    assert out[-1] == EOS and tokens.fork_id not in out and tokens.child_id not in out


# ---- blocks ---------------------------------------------------------------------------------


def test_blocks_shared_never_written_by_a_sibling_and_all_freed(engine, tokens, monkeypatch):
    cache = engine.cache
    bs = cache.block_size
    writes_to_shared = []
    real_write = cache.write

    def write(layer, slots, k, v):
        for b in {int(s) // bs for s in slots}:
            if cache.refcount(b) != 1:
                writes_to_shared.append(b)
        return real_write(layer, slots, k, v)

    monkeypatch.setattr(cache, "write", write)
    snapshots = []  # (stream, prefix length, k, v of its visible prefix at fork time)

    def kv_of(node, n):
        table = torch.tensor(cache.block_table(node.cache_id))
        slots = (table[:, None] * bs + torch.arange(bs)).flatten()[:n]
        return cache.k[:, :, slots].clone(), cache.v[:, :, slots].clone()

    def on_fork(parent, child):
        n = cache.length(child.cache_id)
        assert n == len(child.prefix) and cache.block_table(child.cache_id) == cache.block_table(parent.cache_id)
        assert all(cache.refcount(b) >= 2 for b in cache.block_table(child.cache_id))
        full = cache.block_table(child.cache_id)[: n // bs]
        snapshots.append((child, n, *kv_of(child, n), full))
        snapshots.append((parent, n, *kv_of(parent, n), full))

    def on_step(streams, logits):
        for node, n, k, v, full in snapshots:
            if not node.done:  # what a live stream reads of its prefix never changes...
                k2, v2 = kv_of(node, n)
                assert torch.equal(k, k2) and torch.equal(v, v2)
                # ...and its full prefix blocks are still the shared ones (no copy)
                assert cache.block_table(node.cache_id)[: len(full)] == full

    free_before = cache.num_free_blocks
    sched = ForcedSchedule.structured(items=5, detail_tokens=9, head_tokens=3)
    dec = AparDecoder(engine, tokens, schedule=sched, on_fork=on_fork, on_step=on_step)
    list(dec.generate(PROMPT, 500, stop_token_ids={EOS}))
    assert dec.stats.forks == 5 and snapshots
    assert writes_to_shared == []
    assert cache.num_used_blocks == 0 and cache.num_free_blocks == free_before == cache.max_blocks
    assert cache.live_streams == []


def test_finished_stream_frees_at_once_and_closing_frees_everything(engine, tokens):
    cache = engine.cache
    used = []
    sched = ForcedSchedule(forks={(): [1]}, ends={(0,): 2, (): 40}, sampled_stops=False)
    dec = AparDecoder(engine, tokens, schedule=sched, on_step=lambda s, _logits: used.append((len(s), cache.num_used_blocks)))
    gen = dec.generate(PROMPT, 100, stop_token_ids={EOS})
    for _ in range(12):
        next(gen)
    # once the short child ended, only the root's blocks remain: prompt + its tokens
    n, blocks = used[-1]
    assert n == 1 and blocks == -(-cache.length(dec.root.cache_id) // cache.block_size)
    gen.close()
    assert cache.num_used_blocks == 0 and dec.stats.finish_reason == "cancelled"


# ---- rules ----------------------------------------------------------------------------------


def test_child_token_is_never_sampled(engine, greedy_ref):
    # make [Child] the token the model wants most at the first step
    toks = AparTokens(fork_id=250, child_id=greedy_ref[0])
    dec = AparDecoder(engine, toks, keep_control=True)
    out = list(dec.generate(PROMPT, 20))
    assert toks.child_id not in out and out[0] != greedy_ref[0]


def test_fork_happy_model_respects_no_double_fork_and_caps(engine, tokens):
    happy = _ForkHappy(engine, tokens.fork_id)
    for max_streams, max_depth, deepest in ((4, 2, 2), (6, 3, 3), (1, 2, 1)):
        dec = AparDecoder(happy, tokens, max_streams=max_streams, max_depth=max_depth, keep_control=True)
        list(dec.generate(PROMPT, 60))
        nodes = _nodes(dec.root)
        assert dec.stats.peak_streams <= max_streams
        assert len(nodes) == 1 + dec.stats.forks
        assert max(len(n.path) + 1 for n in nodes) == deepest
        assert dec.stats.forks == max_streams - 1  # nobody finishes: the cap is reached
        for n in nodes:
            assert n.depth == len(n.path) + 1
            toks = n.tokens
            assert all(not (a == tokens.fork_id and b in (tokens.fork_id, tokens.child_id)) for a, b in zip(toks, toks[1:]))
            assert tokens.child_id not in toks[1:] and (toks[0] == tokens.child_id) == bool(n.path)
            if n.depth >= max_depth:
                assert tokens.fork_id not in toks
        assert engine.cache.num_used_blocks == 0


def test_forced_forks_obey_the_rules(engine, tokens):
    # consecutive forks, a fork right after [Child], and more items than the stream cap
    sched = ForcedSchedule(forks={(): [1, 2, 5, 8, 11, 14], (0,): [1, 3]}, ends={(): 20, **{(i,): 6 for i in range(6)}},
                           sampled_stops=False)
    dec = AparDecoder(engine, tokens, max_streams=3, max_depth=2, schedule=sched)
    list(dec.generate(PROMPT, 200, stop_token_ids={EOS}))
    nodes = _nodes(dec.root)
    assert dec.stats.peak_streams <= 3
    # root: 2 follows a fork; 8 comes while 3 streams are live (child 0 ends in that very
    # step); child 0: index 1 follows [Child] and depth 2 is the cap anyway
    forks = [i for i, t in enumerate(dec.root.tokens) if t == tokens.fork_id]
    assert forks == [1, 5, 11, 14] and len(nodes) == 5
    assert all(not n.children for n in nodes if n.path)
    assert dec.stats.refused_forks == 4
    assert engine.cache.num_used_blocks == 0


def test_budget_counts_all_streams_and_schedule_validation(engine, tokens):
    sched = ForcedSchedule.structured(items=4, detail_tokens=30)
    dec = AparDecoder(engine, tokens, schedule=sched)
    out = list(dec.generate(PROMPT, 25, stop_token_ids={EOS}))
    assert dec.stats.tokens == 25 and dec.stats.finish_reason == "length"
    assert len(out) <= 25 and engine.cache.num_used_blocks == 0
    with pytest.raises(ValueError, match="stop_token_ids"):
        list(AparDecoder(engine, tokens, schedule=ForcedSchedule(ends={(): 2})).generate(PROMPT, 1024))
    assert engine.cache.num_used_blocks == 0
    with pytest.raises(ValueError, match="outside the vocabulary"):
        AparDecoder(engine, AparTokens(999, 3))


# ---- document order -------------------------------------------------------------------------


def _final_prefix_len(root, stops, control) -> int:
    """Independent oracle: tokens that no live stream precedes in document order."""
    count = 0

    def walk(node) -> bool:
        nonlocal count
        kids = dict(node.children)
        for i in range(len(node.tokens) + 1):
            if i in kids and not walk(kids[i]):
                return False
            if i == len(node.tokens):
                break
            t = node.tokens[i]
            if t not in control and not (t in stops and node.path):
                count += 1
        return node.done

    walk(root)
    return count


def test_document_order_reassembly_and_prompt_streaming(engine, tokens):
    control = {tokens.fork_id, tokens.child_id}
    received: list[int] = []
    waits = []

    def on_step(streams, logits):
        # everything final has been handed out already, and nothing more
        assert len(received) == _final_prefix_len(dec.root, {EOS}, control)
        waits.append(len(received))

    sched = ForcedSchedule(forks={(): [2, 5, 8], (1,): [2]}, ends={(): 10, (0,): 9, (1,): 4, (2,): 3, (1, 0): 5},
                           sampled_stops=False)
    dec = AparDecoder(engine, tokens, max_depth=3, schedule=sched, on_step=on_step)
    for tok in dec.generate(PROMPT, 200, stop_token_ids={EOS}):
        received.append(tok)

    def doc(node):
        out, kids = [], dict(node.children)
        for i, t in enumerate(node.tokens):
            if t not in control and not (t == EOS and node.path):
                out.append(t)
            if i + 1 in kids:
                out += doc(kids[i + 1])
        return out

    expected = doc(dec.root)
    assert received == expected and received[-1] == EOS
    # child 0's details come before the root's second item although the root wrote it earlier
    root, child0 = dec.root, dict(dec.root.children)[3]
    assert received[:2] == root.tokens[:2]
    assert received[2:10] == child0.tokens[1:9]
    assert received[10:12] == root.tokens[3:5]
    assert waits[1] > 0 and len(set(waits)) > 4  # streamed progressively, not at the end


# ---- LocalModel(apar=True) with a real small model -------------------------------------------


@pytest.fixture(scope="module")
def smol_apar():
    from glm_agent.models.local import LocalModel

    # SmolLM2 is not APAR-tuned: two special tokens it never writes in a chat stand in for
    # [Fork]/[Child], so free decoding never forks and a schedule drives the forks.
    return LocalModel("smollm2", dtype="float32", progress=False, apar=True,
                      apar_tokens=("<gh_stars>", "<issue_start>")).load()


async def test_local_model_apar_without_control_tokens_is_a_clear_error():
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.core.errors import ModelError
    from glm_agent.core.messages import UserMessage
    from glm_agent.models.local import LocalModel

    m = LocalModel("smollm2", dtype="float32", progress=False, apar=True)
    with pytest.raises(AparError, match=r"\[Fork\]/\[Child\]"):
        AparTokens.from_tokenizer(m.tokenizer)
    with pytest.raises(ModelError, match=r"\[Fork\]/\[Child\]") as info:  # the runtime's error type
        await m.complete([UserMessage(content="hi")], [], GenerationSettings(max_new_tokens=4))
    assert not isinstance(info.value, AparError)


async def test_local_model_apar_streams_same_text_then_reassembles_forks(smol_apar):
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.core.messages import UserMessage

    m = smol_apar
    msgs = [UserMessage(content="List three fruits.")]
    settings = GenerationSettings(max_new_tokens=12)
    ids = m.tokenizer.encode(m.render(msgs, []), allow_special=True)
    stops = set(m.tokenizer.eos_ids) | set(m.checkpoint.config.eos_token_ids)
    ref_all = list(m.engine.generate(ids, 12, stop_token_ids=stops))
    ref = [t for t in ref_all if t not in stops]
    text, calls, done = await m.complete(msgs, [], settings)
    assert text == m.tokenizer.decode(ref) and text.strip() and done.completion_tokens == len(ref_all)

    # a forced fork after the root's 3rd token: the child's text lands right after it
    sched = ForcedSchedule(forks={(): [3]}, ends={(0,): 5})
    m._apar_options = {"schedule": sched}
    try:
        text, _, done = await m.complete(msgs, [], GenerationSettings(max_new_tokens=16))
    finally:
        m._apar_options = {}
    dec = AparDecoder(m.engine, AparTokens.from_tokenizer(m.tokenizer, "<gh_stars>", "<issue_start>"),
                      schedule=sched)
    doc = [t for t in dec.generate(ids, 16, stop_token_ids=stops) if t not in stops]
    root, child = dec.root.tokens, dict(dec.root.children)[4].tokens
    assert len(child) > 1 and len(root) > 4
    assert doc == root[:3] + [t for t in child[1:] + root[4:] if t not in stops]
    assert text == m.tokenizer.decode(doc) and done.completion_tokens == dec.stats.tokens
    assert m.engine.cache.num_used_blocks == 0


def test_streams_stop_at_the_context_limit_and_a_full_cache_is_a_clear_error():
    from glm_agent.engine.errors import CacheExhaustedError

    toks = AparTokens(fork_id=254, child_id=253)
    sched = ForcedSchedule(forks={(): [2, 5, 8]}, sampled_stops=False)
    tight = random_engine("glm4", max_context=32, block_size=4, cache_tokens=64)
    with pytest.raises(CacheExhaustedError, match="KV cache full"):
        list(AparDecoder(tight, toks, schedule=sched).generate(PROMPT, 500))
    assert tight.cache.num_used_blocks == 0  # every stream freed on the way out

    small = random_engine("glm4", max_context=32, block_size=4, cache_tokens=256)
    dec = AparDecoder(small, toks, schedule=sched)
    out = list(dec.generate(PROMPT, 500, stop_token_ids={EOS}))
    nodes = _nodes(dec.root)
    assert len(nodes) == 4 and all(n.finish == "length" for n in nodes)
    assert all(len(n.visible) == 32 + 1 for n in nodes)  # the last token is sampled, not fed
    assert dec.stats.finish_reason == "length" and EOS not in out
    assert small.cache.num_used_blocks == 0 and small.cache.live_streams == []


def test_sampling_with_forks_is_seeded_and_follows_the_rules(engine, tokens):
    sched = ForcedSchedule(forks={(): [3, 6]}, ends={(): 12, (0,): 6, (1,): 5}, sampled_stops=False)
    s = SamplingParams(temperature=1.5, top_p=0.95, seed=7, repetition_penalty=1.1)
    runs = []
    for _ in range(2):
        dec = AparDecoder(engine, tokens, schedule=sched, keep_control=True)
        runs.append(list(dec.generate(PROMPT, 100, s, stop_token_ids={EOS})))
        assert dec.stats.forks == 2 and engine.cache.num_used_blocks == 0
        for n in _nodes(dec.root):
            assert tokens.child_id not in n.tokens[1:]
    assert runs[0] == runs[1] and runs[0].count(tokens.fork_id) == 2
    other = AparDecoder(engine, tokens, schedule=sched, keep_control=True)
    other_seed = dataclasses.replace(s, seed=8)
    assert list(other.generate(PROMPT, 100, other_seed, stop_token_ids={EOS})) != runs[0]
