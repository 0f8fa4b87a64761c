"""Grammar-constrained tool calls with a real model (SmolLM2-135M) and real tokenizers.

A model is "pushed" toward an invalid call by a logits processor that strongly favours the
tokens of that call, exactly as a model that wants to write it would; the constraint runs after
it in the engine's sampling path. Without the constraint the invalid call comes out verbatim.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.events import ToolCallReady
from glm_agent.core.messages import UserMessage
from glm_agent.engine.params import SamplingParams
from glm_agent.models.constrain import CallConstraint, cut_off_call, normalize_tool_choice
from glm_agent.models.local import LocalModel

WEATHER = ToolSpec(
    name="get_weather",
    description="Weather forecast for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"]},
)
PY = ToolSpec(
    name="python",
    description="Run Python code and return what it prints.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
TOOLS = [WEATHER, PY]
SPECS = {t.name: t for t in TOOLS}
ASK = [UserMessage(content="What will the weather be in Paris over the next 3 days?")]


@pytest.fixture(scope="module")
def smol() -> LocalModel:
    return LocalModel("smollm2", dtype="float32", progress=False).load()


@pytest.fixture(scope="module")
def smol_glm() -> LocalModel:
    """The same weights speaking GLM-4's dialect: the GLM grammar runs on a real tokenizer and model."""
    return LocalModel("smollm2", dtype="float32", progress=False, dialect="glm4").load()


def _valid(call) -> None:
    assert call.arguments_error is None, call
    assert call.name in SPECS, call.name
    jsonschema.validate(call.arguments, SPECS[call.name].parameters)


def _pushed(model: LocalModel, text: str, constrained: bool, max_new: int = 48) -> tuple[str, list]:
    """Generate with every step biased toward the tokens of `text` (the invalid call)."""
    tok = model.tokenizer
    target = tok.encode(text, allow_special=True)
    ids = tok.encode_prompt(model.render_prompt(ASK, TOOLS))
    stops = set(tok.eos_ids)
    constraint = CallConstraint(tok, model.engine.vocab_size, TOOLS, model.dialect.name, stop_ids=sorted(stops))

    def push(tokens, logits):
        logits = logits.clone()
        if len(tokens) < len(target):
            logits[target[len(tokens)]] += 100.0
        return constraint(tokens, logits) if constrained else logits

    gen = model.scheduler.submit(ids, max_new, SamplingParams(), stop_token_ids=stops, logits_processor=push)
    out = [t for t in gen if t not in stops]
    text_out = tok.decode(out)
    parser = model.dialect.parser(TOOLS)
    events = parser.feed(text_out) + parser.finish()
    return text_out, [e.call for e in events if isinstance(e, ToolCallReady)]


@pytest.mark.parametrize("bad", [
    '<tool_call>\n{"name": "get_stock_price", "arguments": {"ticker": "ACME"}}\n</tool_call>',  # no such tool
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": 75001, "days": "three"}}\n</tool_call>',  # types
    '{"name": "get_weather", "arguments": {"town": "Paris"}}',  # a bare call (Qwen-Coder style), wrong keys
    '{{"name": "get_weather", "arguments": {"town": "Paris"}}',  # the template's doubled brace, copied
])
def test_hermes_push_toward_invalid_call_still_gives_valid_call(smol, bad):
    free_text, free_calls = _pushed(smol, bad, constrained=False)
    assert free_calls and any(c.name not in SPECS or not _schema_ok(c) for c in free_calls), free_text
    text, calls = _pushed(smol, bad, constrained=True)
    assert len(calls) >= 1, text
    for call in calls:
        _valid(call)


@pytest.mark.parametrize("bad", [
    'get_stock_price\n{"ticker": "ACME"}',  # a name that is no tool
    'get_weather\n{"city": ["Paris"], "days": 3.5}',  # wrong types
])
def test_glm_push_toward_invalid_call_still_gives_valid_call(smol_glm, bad):
    free_text, free_calls = _pushed(smol_glm, bad, constrained=False)
    assert free_calls and not all(c.name in SPECS and _schema_ok(c) for c in free_calls), free_text
    text, calls = _pushed(smol_glm, bad, constrained=True)
    # Only a tool's name may stand alone on a segment's first line: the model either calls a
    # real tool with valid arguments or writes text; never a call to a tool that does not exist.
    assert calls or not text.startswith("get_stock_price\n"), text
    for call in calls:
        _valid(call)


def _schema_ok(call) -> bool:
    try:
        jsonschema.validate(call.arguments, SPECS[call.name].parameters)
    except jsonschema.ValidationError:
        return False
    return call.arguments_error is None


async def test_required_and_named_force_a_valid_call(smol):
    chat = [UserMessage(content="Thanks, that's all for today!")]
    _, free_calls, _ = await smol.complete(chat, TOOLS, GenerationSettings(max_new_tokens=40))
    assert not free_calls  # left alone, the model just answers
    _, calls, done = await smol.complete(chat, TOOLS, GenerationSettings(max_new_tokens=80, tool_choice="required"))
    assert len(calls) >= 1 and done.finish_reason == "tool_calls"
    _valid(calls[0])
    named = {"type": "function", "function": {"name": "python"}}
    _, calls, _ = await smol.complete(chat, TOOLS, GenerationSettings(max_new_tokens=80, tool_choice=named))
    assert calls and calls[0].name == "python"
    _valid(calls[0])


async def test_glm_required_and_named(smol_glm):
    # (GLM-4's `python` is a built-in whose body is raw code, left free: required picks among JSON tools here.)
    _, calls, _ = await smol_glm.complete(ASK, [WEATHER], GenerationSettings(max_new_tokens=60, tool_choice="required"))
    assert calls
    _valid(calls[0])
    _, calls, _ = await smol_glm.complete(ASK, TOOLS, GenerationSettings(max_new_tokens=60, tool_choice={"name": "get_weather"}))
    assert calls and calls[0].name == "get_weather"
    _valid(calls[0])


async def test_tool_choice_none_never_calls(smol):
    # The same request that "required" turns into a call: with "none" the turn is text only.
    settings = GenerationSettings(max_new_tokens=40, tool_choice="none")
    events = [ev async for ev in smol.stream(ASK, TOOLS, settings)]
    assert not any(isinstance(e, ToolCallReady) for e in events)
    text, calls, done = await smol.complete(ASK, TOOLS, settings)
    assert text.strip() and not calls and done.finish_reason in ("stop", "length")


async def test_unknown_tool_choice_is_a_clear_error(smol):
    from glm_agent.core.errors import ModelError

    with pytest.raises(ModelError, match="names no tool"):
        await smol.complete(ASK, TOOLS, GenerationSettings(max_new_tokens=4, tool_choice={"name": "nope"}))


async def test_response_format_json_schema(smol):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    text, calls, done = await smol.complete([UserMessage(content="Describe a person.")], [],
                                            GenerationSettings(max_new_tokens=60, response_format=fmt))
    jsonschema.validate(json.loads(text), schema)
    assert not calls and done.finish_reason == "stop"


async def test_call_cut_off_by_the_token_limit_is_a_cut_call(smol):
    _, calls, done = await smol.complete(ASK, TOOLS, GenerationSettings(max_new_tokens=8, tool_choice="required"))
    assert done.finish_reason == "length"
    assert len(calls) == 1 and "cut off" in calls[0].arguments_error


async def test_constraints_can_be_turned_off(smol):
    off = LocalModel("smollm2", dtype="float32", progress=False, constrained=False)
    assert off.constrained is False and smol.constrained is True
    await smol.complete(ASK, TOOLS, GenerationSettings(max_new_tokens=4, constrained=False))
    assert smol.constraint_stats == {}  # no processor at all on the unconstrained path


def test_cut_off_call_reads_each_dialect():
    assert cut_off_call('<tool_call>\n{"name": "python", "arguments": {"code": "pri', "hermes", TOOLS).name == "python"
    assert cut_off_call('<tool_call>\n{"name": "python", "arguments": {}}', "hermes", TOOLS) is None
    assert cut_off_call('Sure:\n{"name": "get_weather", "argu', "hermes", TOOLS).name == "get_weather"
    # the template's doubled opening brace, which Qwen2.5 copies
    assert cut_off_call('{{"name": "python", "arguments": {"code": "import time\\nimp', "hermes", TOOLS).name == "python"
    assert cut_off_call('{{"name": "python", "arguments": {"code": "1"}}', "hermes", TOOLS) is None
    assert cut_off_call('get_weather\n{"city": "Par', "glm4", TOOLS).name == "get_weather"
    assert cut_off_call("The answer is 4", "glm4", TOOLS) is None
    assert normalize_tool_choice({"type": "function", "function": {"name": "python"}}, TOOLS) == {"name": "python"}
    with pytest.raises(ValueError):
        normalize_tool_choice("sometimes", TOOLS)


def test_a_failing_logits_processor_ends_only_its_request(smol):
    """The scheduler's hook: an error in one request's processor does not touch the batch."""
    ids = smol.tokenizer.encode_prompt(smol.render_prompt(ASK, []))

    def broken(tokens, logits):
        raise RuntimeError("bad processor")

    bad = smol.scheduler.submit(ids, 8, SamplingParams(), logits_processor=broken)
    good = smol.scheduler.submit(ids, 8, SamplingParams(), logits_processor=lambda tokens, logits: logits)
    with pytest.raises(RuntimeError, match="bad processor"):
        list(bad)
    assert len(list(good)) == 8 and bad.finish_reason == "error" and good.finish_reason == "length"


@pytest.mark.slow
async def test_embedded_qwen_pushed_and_forced():
    """The default model (Qwen's vocabulary: `<tool_call>` is one special token): a push toward
    a tool that does not exist still ends in a valid call, and "required" on chit-chat gives one."""
    qwen = LocalModel("embedded", progress=False).load()
    try:
        bad = '<tool_call>\n{"name": "get_stock_price", "arguments": {"ticker": "ACME"}}\n</tool_call>'
        free_text, free_calls = _pushed(qwen, bad, constrained=False, max_new=30)
        assert [c.name for c in free_calls] == ["get_stock_price"], free_text
        text, calls = _pushed(qwen, bad, constrained=True, max_new=30)
        assert calls, text
        for call in calls:
            _valid(call)
        chat = [UserMessage(content="Thanks, that's all!")]
        _, calls, _ = await qwen.complete(chat, TOOLS, GenerationSettings(max_new_tokens=40, tool_choice="required"))
        assert calls
        _valid(calls[0])
    finally:
        await qwen.aclose()


@pytest.mark.parametrize("choice", ["required", {"name": "get_weather"}])
def test_tiktoken_vocabulary_glm_call_under_random_logits(tmp_path, choice):
    """GLM-4's own tokenizers are tiktoken files: the grammar must hold over such a vocabulary
    too. Random logits stand in for a model that wants anything at all."""
    import base64

    import torch

    from glm_agent.engine.tokenizer import load_tokenizer
    from glm_agent.models.dialects import get_dialect

    # Every byte plus some merges that cut across JSON syntax, in rank order.
    merges = [b'{"', b'":', b'",', b'"}', b' "', b"city", b"days", b"get", b"_we", b"ather", b"\n{", b"Par", b"is"]
    tokens = [bytes([b]) for b in range(256)] + merges
    (tmp_path / "tokenizer.model").write_bytes(
        b"\n".join(base64.b64encode(t) + b" " + str(i).encode() for i, t in enumerate(tokens)))
    tok = load_tokenizer(tmp_path)
    assert tok.kind == "tiktoken"
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        constraint = CallConstraint(tok, tok.vocab_size, TOOLS, "glm4", tool_choice=choice, stop_ids=tok.eos_ids,
                                    greedy=True)
        out: list[int] = []
        for _ in range(400):
            logits = constraint(out, torch.randn(tok.vocab_size, generator=gen))
            token = int(logits.argmax())
            if token in tok.eos_ids:
                break
            out.append(token)
        else:
            raise AssertionError(f"no end after 400 tokens: {tok.decode(out)!r}")
        text = tok.decode(out)
        parser = get_dialect("glm4").parser(TOOLS)
        calls = [e.call for e in [*parser.feed(text), *parser.finish()] if isinstance(e, ToolCallReady)]
        assert len(calls) == 1, text
        _valid(calls[0])
        if isinstance(choice, dict):
            assert calls[0].name == "get_weather"
