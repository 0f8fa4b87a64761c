"""The continuous-batching scheduler on a tiny random engine: parity, fairness, cancellation,
a full cache, prefix reuse."""

from __future__ import annotations

import threading

import pytest
from _random_engine import random_engine

from glm_agent.engine.errors import CacheExhaustedError, ContextOverflowError
from glm_agent.engine.params import SamplingParams
from glm_agent.engine.scheduler import Scheduler

PROMPTS = [
    [5, 17, 200, 3, 99, 42, 7],
    [8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25],
    [250, 3],
    [77] * 30 + [5],
]


@pytest.fixture(scope="module")
def engine():
    return random_engine("glm4", max_context=512, block_size=4)


def _alone(engine, prompt, n, **kw):
    return list(engine.generate(prompt, n, **kw))


def _run_all(gens):
    """Consume every generation on its own thread, as concurrent callers do."""
    out = [None] * len(gens)

    def take(i):
        out[i] = list(gens[i])

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(gens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_greedy_requests_equal_each_alone_and_share_steps(engine):
    want = [_alone(engine, p, 12) for p in PROMPTS]
    sizes = []
    sched = Scheduler(engine, on_step=lambda batch: sizes.append(len(batch)))
    gens = [sched.submit(p, 12) for p in PROMPTS]
    assert _run_all(gens) == want
    assert max(sizes) == len(PROMPTS)  # decoded as one batch
    assert sched.steps < sum(len(w) for w in want)  # far fewer forwards than tokens
    assert all(g.finish_reason == "length" for g in gens)
    assert engine.cache.num_used_blocks == 0


def test_stop_token_is_delivered_last_and_ends_only_that_request(engine):
    ref = _alone(engine, PROMPTS[0], 10)
    stop = ref[3]
    sched = Scheduler(engine)
    a = sched.submit(PROMPTS[0], 10, stop_token_ids={stop})
    b = sched.submit(PROMPTS[1], 10)
    got_a, got_b = _run_all([a, b])
    assert got_a == ref[: ref.index(stop) + 1] and a.finish_reason == "stop"
    assert got_b == _alone(engine, PROMPTS[1], 10) and b.finish_reason == "length"


def test_a_long_prompt_does_not_block_short_requests(engine):
    order = []
    sched = Scheduler(engine, step_tokens=16, on_step=lambda batch: order.append(
        [(g.prompt[0], n) for g, n in batch]))
    long_prompt = [(3 * i + 1) % 256 for i in range(320)]
    long = sched.submit(long_prompt, 4)
    short = sched.submit(PROMPTS[0], 6)
    got_long, got_short = _run_all([long, short])
    assert got_short == _alone(engine, PROMPTS[0], 6)
    assert got_long == _alone(engine, long_prompt, 4)
    # The short request finished while the long prompt was still being read in chunks.
    last_short = max(i for i, step in enumerate(order) if any(k == PROMPTS[0][0] for k, _ in step))
    first_long_token = next(i for i, step in enumerate(order) if sum(
        n for k, n in order_prefix(order, i) if k == long_prompt[0]) >= len(long_prompt))
    assert last_short < first_long_token
    assert all(sum(n for _, n in step) <= 16 for step in order)


def order_prefix(order, i):
    return [x for step in order[: i + 1] for x in step]


def test_no_starvation_first_come_first_served(engine):
    first_step = {}
    steps = []

    def trace(batch):
        steps.append(len(batch))
        for g, _ in batch:
            first_step.setdefault(g, len(steps))

    sched = Scheduler(engine, max_batch=2, on_step=trace)
    gens = [sched.submit(PROMPTS[i % 4], 3 + i) for i in range(7)]
    outs = _run_all(gens)
    assert [len(o) for o in outs] == [3 + i for i in range(7)]  # everyone finished
    starts = [first_step[g] for g in gens]
    assert starts == sorted(starts) and starts[2] > starts[1]  # in arrival order, 2 at a time
    assert max(steps) == 2
    assert engine.cache.num_used_blocks == 0


def test_cancelling_frees_blocks_at_once_running_or_waiting(engine):
    sched = Scheduler(engine, max_batch=1)
    used0 = engine.cache.num_used_blocks
    running = sched.submit(PROMPTS[3], 200)
    waiting = sched.submit(PROMPTS[1], 200)
    it = iter(running)
    next(it), next(it)
    assert engine.cache.num_used_blocks > used0
    running.close()  # returns once the blocks are back
    assert running.finish_reason == "cancelled"
    assert engine.cache.num_used_blocks <= used0 + 5  # only `waiting`, just admitted, may hold some
    waiting.close()
    assert engine.cache.num_used_blocks == used0
    assert len(list(running)) < 200 and waiting.finish_reason == "cancelled"
    sched.close()
    assert sched._thread is None


def test_a_full_cache_preempts_and_recomputes_with_the_same_text():
    small = random_engine("glm4", max_context=512, block_size=4, cache_tokens=96)  # 24 blocks
    want = [_alone(small, p, 20) for p in PROMPTS]
    sched = Scheduler(small)
    gens = [sched.submit(p, 20) for p in PROMPTS]
    assert _run_all(gens) == want  # 4 requests need ~33 blocks together
    assert sum(g.preemptions for g in gens) > 0
    assert small.cache.num_used_blocks == 0
    too_big = sched.submit([(i * 5) % 256 for i in range(90)], 20)  # 110 tokens > 96 alone
    with pytest.raises(CacheExhaustedError, match="larger cache_tokens"):
        list(too_big)
    assert small.cache.num_used_blocks == 0


def test_same_prompt_again_reuses_cached_blocks(engine):
    sched = Scheduler(engine)
    prompt = [(7 * i) % 256 for i in range(41)]
    first = sched.submit(prompt, 5)
    a = list(first)
    again = sched.submit(prompt + a + [9], 5)
    b = list(again)
    assert again.cached_tokens >= 40 and first.cached_tokens <= 40
    assert b == _alone(engine, prompt + a + [9], 5)


def test_seeded_sampling_per_request(engine):
    sched = Scheduler(engine)
    s = SamplingParams(temperature=0.9, top_k=20, seed=3)
    gens = [sched.submit(PROMPTS[0], 10, s), sched.submit(PROMPTS[0], 10, s), sched.submit(PROMPTS[0], 10)]
    x, y, greedy = _run_all(gens)
    assert x == y == _alone(engine, PROMPTS[0], 10, sampling=s)
    assert greedy == _alone(engine, PROMPTS[0], 10) != x


def test_bad_requests_fail_before_any_work(engine):
    sched = Scheduler(engine)
    with pytest.raises(ContextOverflowError):
        sched.submit([1] * 500, 100)
    with pytest.raises(ValueError, match="out of range"):
        sched.submit([1, 9999], 4)
    with pytest.raises(ValueError):
        sched.submit([], 4)
    assert list(sched.submit([1, 2], 0)) == []
    assert sched._thread is None


def test_exclusive_pauses_the_batch_between_steps(engine):
    sched = Scheduler(engine)
    gen = sched.submit(PROMPTS[1], 60)
    it = iter(gen)
    next(it)
    for _ in range(3):  # the loop, busy stepping, still lets a waiting caller in promptly
        with sched.exclusive():
            before = len(gen.tokens)
            s = engine.new_stream()  # the engine is ours: drive it directly
            engine.prefill(s, PROMPTS[0])
            engine.free(s)
            assert len(gen.tokens) == before  # no step ran meanwhile
    gen.close()
    assert gen.finish_reason == "cancelled" and len(gen.tokens) < 60
