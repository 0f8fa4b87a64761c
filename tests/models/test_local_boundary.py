"""LocalModel at its boundary with the engine: the runtime's settings become `SamplingParams`,
the engine's errors reach callers as `ModelError`s (same message), and the checkpoint's chat
template source is compiled here, in models/."""

from __future__ import annotations

import pytest

from glm_agent.core.contracts import GenerationSettings
from glm_agent.core.errors import ContextOverflowError, GlmAgentError, ModelError
from glm_agent.core.messages import UserMessage
from glm_agent.engine import errors as engine_errors
from glm_agent.engine.params import SamplingParams
from glm_agent.models.local import LocalModel, engine_errors_as_model_errors, model_error, sampling_params

QUESTION = [UserMessage(content="What is the capital of France?")]


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel("smollm2", dtype="float32", progress=False)


@pytest.mark.parametrize("exc, kind", [
    (engine_errors.ContextOverflowError("stream 3 would reach 65 tokens"), ContextOverflowError),
    (engine_errors.CheckpointError("truncated file"), ModelError),
    (engine_errors.CacheExhaustedError("KV cache full"), ModelError),
    (engine_errors.QuantError("bits must be 4 or 8"), ModelError),
    (engine_errors.EmbeddedModelError("parts missing"), ModelError),
    (engine_errors.AparError("no [Fork]"), ModelError),
])
def test_each_engine_error_becomes_the_runtimes_error(exc, kind):
    err = model_error(exc)
    assert type(err) is kind and isinstance(err, GlmAgentError) and not isinstance(err, engine_errors.EngineError)
    assert str(err) == str(exc) and err.__cause__ is exc
    with pytest.raises(kind) as info, engine_errors_as_model_errors():
        raise exc
    assert str(info.value) == str(exc) and info.value.__cause__ is exc


def test_settings_become_sampling_params():
    s = GenerationSettings(max_new_tokens=7, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.2,
                           seed=3, stop=["x"])
    assert sampling_params(s) == SamplingParams(temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.2, seed=3)
    with pytest.raises(ValueError, match="top_p"):
        sampling_params(GenerationSettings(top_p=0.0))


@pytest.mark.parametrize("make, match", [
    (lambda d: d / "missing.gguf", "not found"),
    (lambda d: d, "no config.json"),  # a folder that is no checkpoint
    (lambda d: (d / "bad.gguf", (d / "bad.gguf").write_bytes(b"GGUF" + b"\xff" * 20))[0], "GGUF version"),
])
def test_a_bad_checkpoint_is_a_model_error(tmp_path, make, match):
    m = LocalModel(str(make(tmp_path)), progress=False)
    with pytest.raises(ModelError, match=match) as info:
        m.load()
    assert not isinstance(info.value, engine_errors.EngineError)
    assert isinstance(info.value.__cause__, engine_errors.CheckpointError)


def test_a_bad_quant_setting_is_a_model_error():
    with pytest.raises(ModelError, match="unknown quantization 'int5'") as info:
        LocalModel("smollm2", quant="int5", progress=False).load()
    assert isinstance(info.value.__cause__, engine_errors.QuantError)


async def test_errors_during_generation_reach_the_consumer_as_model_errors(smol):
    from glm_agent.engine.engine import Engine

    ck = smol.checkpoint
    tight = LocalModel("smollm2", dtype="float32", progress=False)
    # The real model with a KV cache far too small for the prompt: the engine runs out of blocks.
    tight._engine = Engine.from_weights(ck.config, ck.weights(), max_context=2048, cache_tokens=32)
    with pytest.raises(ModelError, match="KV cache full") as info:
        await tight.complete(QUESTION, [], GenerationSettings(max_new_tokens=4))
    assert not isinstance(info.value, engine_errors.EngineError)
    assert isinstance(info.value.__cause__, engine_errors.CacheExhaustedError)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        await smol.complete(QUESTION, [], GenerationSettings(max_new_tokens=4, temperature=-1.0))


def test_the_chat_template_is_compiled_here_from_the_checkpoints_source(smol):
    from glm_agent.models.templates import ChatTemplate

    source = smol.checkpoint.chat_template
    assert isinstance(source, str) and "im_start" in source
    assert isinstance(smol.chat_template, ChatTemplate) and smol.chat_template.source == source
    assert smol.chat_template is smol.chat_template  # compiled once
    assert smol.render(QUESTION).endswith("<|im_start|>assistant\n")
