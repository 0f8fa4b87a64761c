"""Engine: greedy generation equals transformers, streams are freed, overflow, quant hooks."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from _hf_checkpoints import ARCHS, make_hf_model, save_hf, to_chatglm_layout
from _random_engine import random_engine, random_weights, tiny_config

from glm_agent.engine.engine import Engine
from glm_agent.engine.errors import ContextOverflowError
from glm_agent.engine.loaders import load_safetensors_checkpoint
from glm_agent.engine.params import SamplingParams

PROMPT = [5, 17, 200, 3, 99, 42, 7, 255, 128, 64, 33]


def _hf_greedy(model, ids, n):
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False)
    return out[0, len(ids) :].tolist()


def _load(folder):
    return Engine.from_weights(*load_safetensors_checkpoint(folder))


@pytest.mark.parametrize("arch", ARCHS + ["chatglm"])
def test_greedy_32_tokens_identical_to_transformers(arch, tmp_path):
    pytest.importorskip("transformers")
    model = make_hf_model("glm" if arch == "chatglm" else arch, rope_theta=20000.0)
    folder = save_hf(model, tmp_path / "hf")
    if arch == "chatglm":
        folder = to_chatglm_layout(folder, tmp_path / "chatglm", rope_ratio=2.0)
    engine = _load(folder)
    got = list(engine.generate(PROMPT, 32, stop_token_ids=()))
    assert got == _hf_greedy(model, PROMPT, 32)
    assert len(set(got)) > 4  # not a degenerate constant output
    assert engine.cache.num_used_blocks == 0  # finished stream freed its blocks


@pytest.fixture(scope="module")
def engine():
    return random_engine("glm4", max_context=64)


def test_stop_token_is_yielded_last(engine):
    free_run = list(engine.generate(PROMPT, 20))
    stop = free_run[6]
    first = free_run.index(stop)
    got = list(engine.generate(PROMPT, 20, stop_token_ids={stop}))
    assert got == free_run[: first + 1]


def test_closing_generator_frees_stream(engine):
    gen = engine.generate(PROMPT, 20)
    next(gen)
    next(gen)
    assert engine.cache.num_used_blocks > 0 and len(engine.cache.live_streams) == 1
    gen.close()
    assert engine.cache.num_used_blocks == 0 and engine.cache.live_streams == []


def test_context_overflow_raised_before_any_work(engine):
    with pytest.raises(ContextOverflowError, match=r"11 tokens \+ max_new_tokens 60 = 71 .* context of 64"):
        engine.generate(PROMPT, 60)
    assert engine.cache.live_streams == []
    # Exactly at the limit is fine and yields everything.
    assert len(list(engine.generate(PROMPT, 53))) == 53


def test_bad_input_is_rejected(engine):
    with pytest.raises(ValueError, match="out of range for vocab size 256"):
        engine.generate([1, 300], 2)
    with pytest.raises(ValueError, match="non-empty prompt"):
        engine.generate([], 4)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        engine.generate(PROMPT, -1)
    with pytest.raises(TypeError, match="max_new_tokens must be an int"):
        engine.generate(PROMPT, SamplingParams())  # the budget is its own argument
    assert engine.cache.live_streams == []
    assert list(engine.generate(PROMPT, 0)) == []


def test_seeded_sampling_reproducible(engine):
    s = SamplingParams(temperature=1.0, top_p=0.9, seed=11)
    a = list(engine.generate(PROMPT, 16, s))
    assert a == list(engine.generate(PROMPT, 16, s))
    assert a != list(engine.generate(PROMPT, 16, SamplingParams(temperature=1.0, seed=12)))


def test_bfloat16_engine_close_to_float32():
    config = tiny_config("qwen2")
    f32 = Engine.from_weights(config, random_weights(config))
    bf16 = Engine.from_weights(config, random_weights(config), dtype=torch.bfloat16)
    assert bf16.cache.k.dtype == torch.bfloat16
    a, b = f32.forward_logits(PROMPT), bf16.forward_logits(PROMPT)
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.3
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() > 0.8


def test_weights_stream_one_at_a_time_into_meta_model():
    config = tiny_config("glm4_0414")
    seen = []

    def weights():
        for name, t in random_weights(config):
            seen.append(name)
            yield name, t

    engine = Engine.from_weights(config, weights())
    assert not any(p.is_meta for p in engine.model.parameters())
    assert len(seen) == len(dict(engine.model.named_parameters()))


def _fake_quant(monkeypatch, calls):
    mod = types.ModuleType("glm_agent.engine.quant")

    def quantize_linears(module, quant, empty=False):
        calls.append((module, dict(quant), empty, all(not p.is_meta for p in module.parameters())))
        return module

    mod.quantize_linears = quantize_linears
    monkeypatch.setitem(sys.modules, "glm_agent.engine.quant", mod)


def test_quant_hook_called_per_layer_once_loaded(monkeypatch):
    calls = []
    _fake_quant(monkeypatch, calls)
    config = tiny_config("glm4")
    engine = Engine.from_weights(config, random_weights(config), quant={"bits": 4, "group_size": 32})
    assert [c[0] for c in calls] == list(engine.model.layers)
    assert all(c[1]["bits"] == 4 and not c[2] and c[3] for c in calls)


def test_prequantized_checkpoint_swaps_linears_before_loading(monkeypatch):
    calls = []
    _fake_quant(monkeypatch, calls)
    config = tiny_config("glm4", quant={"bits": 8})
    Engine.from_weights(config, random_weights(config))
    assert len(calls) == 1 and calls[0][2] is True and calls[0][1] == {"bits": 8}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    config = tiny_config("glm4")
    cpu = Engine.from_weights(config, random_weights(config))
    gpu = Engine.from_weights(config, random_weights(config), device="cuda")
    assert (gpu.forward_logits(PROMPT).cpu() - cpu.forward_logits(PROMPT)).abs().max() < 1e-3
    assert list(gpu.generate(PROMPT, 16)) == list(cpu.generate(PROMPT, 16))


def test_step_past_context_is_a_clear_error(engine):
    s = engine.new_stream()
    engine.prefill(s, list(range(60)))
    with pytest.raises(ContextOverflowError, match="reach 65 tokens, beyond the model's context of 64"):
        engine.step([s], [[1, 2, 3, 4, 5]])
    assert engine.cache.length(s) == 60  # nothing was appended
    engine.free(s)
    with pytest.raises(ContextOverflowError, match="65 tokens exceed"):
        engine.forward_logits([3] * 65)


@pytest.mark.parametrize("arch", ARCHS)
def test_prefix_cache_hit_logits_equal_uncached(arch, tmp_path):
    pytest.importorskip("transformers")
    model = make_hf_model(arch)
    folder = save_hf(model, tmp_path / "hf")
    cached = Engine.from_weights(*load_safetensors_checkpoint(folder), block_size=8)
    plain = Engine.from_weights(*load_safetensors_checkpoint(folder), block_size=8, prefix_cache=False)
    system = [(7 * i + 3) % 256 for i in range(37)]  # 4 full blocks of 8 + 5
    turns = [system + [11, 12, 13], system + [11, 12, 13, 90, 91, 92, 93, 94, 95, 96]]
    first = cached.new_stream()
    cached.prefill(first, turns[0])
    cached.free(first)  # its blocks stay in the cache
    for ids in turns:
        hit = cached.new_stream()
        reused = cached.cache.attach_prefix(hit, ids)
        assert reused == 32 if ids is turns[0] else reused == 40
        got = cached.prefill(hit, ids[reused:])
        miss = plain.new_stream()
        ref = plain.prefill(miss, ids)
        assert plain.cache.attach_prefix(plain.new_stream(), ids) == 0  # the control really misses
        assert (got - ref).abs().max().item() < 1e-4
        with torch.no_grad():
            hf = model(torch.tensor([ids])).logits[0, -1]
        assert (got - hf).abs().max().item() < 1e-4
        cached.free(hit)
    # Greedy generation over a hit (the scheduler reuses cached blocks) is the uncached generation.
    from glm_agent.engine.scheduler import Scheduler

    hit = Scheduler(cached).submit(turns[1], 8)
    assert list(hit) == list(plain.generate(turns[1], 8)) and hit.cached_tokens == 40
    assert cached.cache.num_used_blocks == 0 and cached.cache.num_cached_blocks > 0
