"""LocalModel end to end with real models: SmolLM2-135M (fast) and the embedded Qwen (one test)."""

from __future__ import annotations

import asyncio
import time

import pytest

from glm_agent.core.contracts import ChatModel, GenerationSettings, ToolSpec
from glm_agent.core.errors import ContextOverflowError
from glm_agent.core.events import ModelDone, TextDelta, ToolCallReady
from glm_agent.core.messages import AssistantMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.models.local import LocalModel

QUESTION = [UserMessage(content="What is the capital of France?")]
GREEDY = GenerationSettings(max_new_tokens=24)
SHORT = GenerationSettings(max_new_tokens=8)
PY = ToolSpec(
    name="python",
    description="Run Python code in a Jupyter kernel and return what it prints.",
    parameters={"type": "object", "properties": {"code": {"type": "string", "description": "Python code"}},
                "required": ["code"]},
)


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel("smollm2", dtype="float32", progress=False).load()


async def _collect(model, messages, tools=(), settings=GREEDY):
    return [ev async for ev in model.stream(messages, list(tools), settings)]


def _text(events):
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_construction_is_lazy_and_a_chat_model():
    t = time.perf_counter()
    m = LocalModel("no/such/model.gguf")
    assert time.perf_counter() - t < 0.1 and isinstance(m, ChatModel)
    assert "not loaded" in repr(m)


async def test_smollm2_answers_streamed(smol):
    events = await _collect(smol, QUESTION)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert "Paris" in _text(events)
    assert len(deltas) >= 3  # streamed piece by piece, not one block
    done = events[-1]
    assert isinstance(done, ModelDone) and done.finish_reason == "stop"
    assert done.prompt_tokens == len(smol.tokenizer.encode(smol.render(QUESTION)))
    assert 3 <= done.completion_tokens <= GREEDY.max_new_tokens
    assert sum(isinstance(e, ModelDone) for e in events) == 1


async def test_length_and_stop_strings(smol):
    events = await _collect(smol, QUESTION, settings=GenerationSettings(max_new_tokens=3))
    assert events[-1].finish_reason == "length" and events[-1].completion_tokens == 3
    full = _text(await _collect(smol, QUESTION))
    events = await _collect(smol, QUESTION, settings=GenerationSettings(max_new_tokens=24, stop=["Paris"]))
    text = _text(events)
    assert "Paris" not in text and full.startswith(text) and text
    assert events[-1].finish_reason == "stop"


async def test_cancel_then_concurrent_streams(smol):
    agen = smol.stream(QUESTION, [], GenerationSettings(max_new_tokens=200))
    async for ev in agen:
        assert isinstance(ev, TextDelta)
        break
    await agen.aclose()  # leaving early stops generation and frees the model
    a, b = await asyncio.wait_for(asyncio.gather(_collect(smol, QUESTION), _collect(smol, QUESTION)), 120)
    assert _text(a) == _text(b) and "Paris" in _text(a)  # decoded in one batch, same greedy text


async def test_context_overflow_is_clear(tmp_path):
    m = LocalModel("smollm2", dtype="float32", max_context=64, progress=False)
    with pytest.raises(ContextOverflowError, match="context is 64"):
        await _collect(m, [UserMessage(content="word " * 100)])
    # Near the limit, max_new_tokens shrinks to what fits instead of failing.
    events = await _collect(m, QUESTION, settings=GenerationSettings(max_new_tokens=500))
    assert events[-1].prompt_tokens + events[-1].completion_tokens <= 64


def test_tool_result_nudge_for_embedded_only(smol):
    conv = [
        UserMessage(content="6*7?"),
        AssistantMessage(tool_calls=[ToolCall(id="c1", name="python", arguments={"code": "print(6*7)"})]),
        ToolMessage(tool_call_id="c1", name="python", content="42"),
    ]
    qwen = LocalModel("embedded", progress=False)
    prompt = qwen.render(conv, [PY])
    assert "<tool_response>\n42\n\n(Tool finished. Now answer" in prompt
    assert "Tool finished" not in smol.render(conv, [PY])
    assert "Tool finished" not in LocalModel("embedded", tool_result_nudge="", progress=False).render(conv, [PY])


def test_failed_tool_result_gets_the_error_nudge():
    failed = [
        UserMessage(content="AAPL price?"),
        AssistantMessage(tool_calls=[ToolCall(id="c1", name="python", arguments={"code": "quote('AAPL')"})]),
        ToolMessage(tool_call_id="c1", name="python", content="Error: HTTP 503", is_error=True),
    ]
    prompt = LocalModel("embedded", progress=False).render(failed, [PY])
    assert "Error: HTTP 503\n\n(The tool failed" in prompt and "Do not make up a result" in prompt
    assert "Now answer the user's question using this result" not in prompt


@pytest.mark.slow
async def test_embedded_qwen_calls_python():
    """The default model, through the hermes dialect: a parsable `python` call (greedy, 64 tokens)."""
    model = LocalModel("embedded", progress=False)
    events = await _collect(
        model,
        [UserMessage(content="What is 123456789 * 987654321? Use python.")],
        [PY],
        GenerationSettings(max_new_tokens=64),
    )
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    assert len(calls) == 1, events
    call = calls[0]
    assert call.name == "python" and call.arguments_error is None
    assert "123456789" in call.arguments["code"] and "987654321" in call.arguments["code"]
    assert events[-1].finish_reason == "tool_calls"
    await model.aclose()


async def test_quantized_gguf_is_cached_once(tmp_path, monkeypatch):
    """quant= on a GGUF: quantized once into the cache folder, reloaded from there next time."""
    import glm_agent.engine.loaders.quantized as quantized

    monkeypatch.setenv("GLM_AGENT_CACHE", str(tmp_path))
    first = LocalModel("smollm2", quant="int8", progress=False)
    assert "Paris" in _text(await _collect(first, QUESTION, settings=SHORT))
    folders = [p for p in (tmp_path / "quantized").iterdir() if not p.name.startswith(".")]  # not the lock
    assert len(folders) == 1 and ".int8." in folders[0].name
    monkeypatch.setattr(quantized, "quantize_checkpoint", lambda *a, **k: pytest.fail("quantized twice"))
    second = LocalModel("smollm2", quant="int8", progress=False)
    assert _text(await _collect(second, QUESTION, settings=SHORT)) == _text(await _collect(first, QUESTION, settings=SHORT))
    assert second.engine.config.quant["bits"] == 8
