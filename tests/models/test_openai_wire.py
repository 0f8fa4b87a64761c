"""The OpenAI wire format both ways: what one side writes, the other reads back unchanged.

The client writes requests that the server reads; the server writes answers (whole or as
stream chunks) that the client reads. Both sides use `openai_wire`, so these round trips are
the contract between them.
"""

from __future__ import annotations

import pytest

from glm_agent.core.contracts import GenerationSettings, ToolSpec
from glm_agent.core.events import ModelDone
from glm_agent.core.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.models.openai_wire import (
    AnswerWriter,
    ToolCallAccumulator,
    WireError,
    check_json_value,
    done_from_openai,
    error_from_openai,
    error_to_openai,
    iter_sse,
    messages_from_openai,
    messages_to_openai,
    read_chunk,
    settings_from_openai,
    settings_to_openai,
    sse_event,
    tools_from_openai,
    tools_to_openai,
)

WEATHER = ToolSpec(
    name="get_weather", description="Weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
CALLS = [
    ToolCall(id="call_1", name="get_weather", arguments={"city": "北京"}),
    ToolCall(id="call_2", name="get_weather", arguments={"city": "Paris", "days": [1, 2]}),
]


def test_messages_round_trip():
    messages = [
        SystemMessage(content="Be brief."),
        UserMessage(content="weather <|im_end|> in 北京 and Paris?"),
        AssistantMessage(content="", tool_calls=CALLS),
        ToolMessage(tool_call_id="call_1", name="get_weather", content="22"),
        ToolMessage(tool_call_id="call_2", name="get_weather", content="18"),
        AssistantMessage(content="22 and 18."),
    ]
    back = messages_from_openai(messages_to_openai(messages))
    for before, after in zip(messages, back, strict=True):
        assert after.role == before.role and after.content == before.content
    assert [(c.id, c.name, c.arguments) for c in back[2].tool_calls] == [(c.id, c.name, c.arguments) for c in CALLS]
    assert [(m.tool_call_id, m.name) for m in back[3:5]] == [("call_1", "get_weather"), ("call_2", "get_weather")]


def test_unparsable_arguments_travel_verbatim():
    broken = ToolCall(id="call_3", name="get_weather", raw_arguments="{oops", arguments_error="bad")
    (item,) = messages_to_openai([AssistantMessage(tool_calls=[broken])])
    assert item["tool_calls"][0]["function"]["arguments"] == "{oops"
    (back,) = messages_from_openai([item])
    assert back.tool_calls[0].raw_arguments == "{oops" and back.tool_calls[0].arguments_error


def test_tools_and_settings_round_trip():
    assert tools_from_openai(tools_to_openai([WEATHER])) == [WEATHER]
    settings = GenerationSettings(max_new_tokens=9, temperature=0.3, top_p=0.8, top_k=4, repetition_penalty=1.2, seed=5, stop=["END"])
    assert settings_from_openai(settings_to_openai(settings)) == settings
    assert settings_to_openai(GenerationSettings(temperature=0), zhipu=True)["do_sample"] is False


def read_back(chunks: list[dict]) -> tuple[str, list[ToolCall], ModelDone]:
    """What the client makes of the chunks: text, accumulated calls, the done event."""
    text, calls, finish, usage = [], ToolCallAccumulator(), "stop", None
    for chunk in chunks:
        parts = read_chunk(chunk)
        text += parts.text
        calls.add(parts.tool_calls)
        finish = parts.finish or finish
        usage = parts.usage or usage
    return "".join(text), calls.finish(), done_from_openai(finish, usage)


@pytest.mark.parametrize("legacy", [False, True], ids=["tool_calls", "function_call"])
@pytest.mark.parametrize("streamed", [False, True], ids=["whole", "stream"])
def test_answers_round_trip(legacy, streamed):
    writer = AnswerWriter(id="chatcmpl-1", model="m", created=1, legacy=legacy, include_usage=True)
    done = ModelDone(finish_reason="tool_calls", prompt_tokens=30, completion_tokens=12)
    if streamed:
        chunks = [writer.opening_chunk(), writer.text_chunk("Let me "), writer.text_chunk("check.")]
        for i, call in enumerate(CALLS):
            chunks += writer.call_chunks(i, call)
        chunks += writer.closing_chunks(done, CALLS)
    else:
        chunks = [writer.completion("Let me check.", CALLS, done)]
    text, calls, back = read_back(chunks)
    sent = CALLS[:1] if legacy else CALLS  # the legacy form has room for one call
    assert text == "Let me check."
    assert [(c.name, c.arguments) for c in calls] == [(c.name, c.arguments) for c in sent]
    if not legacy:
        assert [c.id for c in calls] == [c.id for c in CALLS]
    assert (back.finish_reason, back.prompt_tokens, back.completion_tokens) == ("tool_calls", 30, 12)
    finishes = [ch["choices"][0]["finish_reason"] for ch in chunks if ch["choices"] and ch["choices"][0]["finish_reason"]]
    assert finishes == ["function_call" if legacy else "tool_calls"]


def test_plain_answer_finish_reasons():
    writer = AnswerWriter(id="x", model="m", created=1)
    for reason in ("stop", "length"):
        body = writer.completion("hi", [], ModelDone(finish_reason=reason))
        assert body["choices"][0]["finish_reason"] == reason and body["choices"][0]["message"]["content"] == "hi"
        assert read_back([body])[2].finish_reason == reason
    assert "usage" not in writer.text_chunk("x")  # only with include_usage


def test_error_bodies_round_trip():
    body = error_to_openai("too long", "invalid_request_error", "messages", "context_length_exceeded")
    assert body == {"error": {"message": "too long", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}
    assert error_from_openai(body) == ("too long", "invalid_request_error", "context_length_exceeded")
    assert error_from_openai({"detail": "Not Found"})[0] == "Not Found"  # FastAPI servers
    assert error_from_openai("plain text") == ("plain text", "", "")


async def test_sse_round_trip():
    chunks = [{"a": "北京"}, {"b": "two\nlines"}]

    async def lines():
        for event in [*map(sse_event, chunks), "data: [DONE]\n\n"]:
            for line in event.split("\n"):
                yield line

    import json

    assert [json.loads(p) async for p in iter_sse(lines())] == chunks


def test_json_value_check_names_the_place():
    check_json_value({"a": [{"b": "fine 😀"}]})
    with pytest.raises(WireError) as info:
        check_json_value({"a": [{"b": "x\ud800"}]}, "tools[0].function.parameters")
    assert info.value.param == "tools[0].function.parameters.a[0].b"
    deep: list = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(WireError) as info:
        check_json_value({"messages": deep})
    assert info.value.param == "messages" + "[0]" * 63
