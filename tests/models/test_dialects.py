"""Dialects: render byte for byte as the official templates do; parse what real models emit.

The templates are the literal texts: glm-4-9b-chat's HF chat template as quoted in
research/glm_all_tools.md §2.2 (built-in tool texts from §1.2), and the Qwen2.5-Coder
template read from the embedded model's GGUF metadata. They are rendered with transformers'
own chat-template renderer, an implementation nobody here wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glm_agent.core.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.contracts import ToolSpec
from glm_agent.models.dialects import get_dialect

DATA = Path(__file__).parent / "data"

WEATHER = ToolSpec(
    name="get_weather",
    description="查询城市天气 (current weather for a city)",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string", "description": "城市名"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city"],
    },
)
PYTHON = ToolSpec(
    name="python",
    description="Run Python code in a Jupyter kernel.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
    raw_arg="code",
    glm_builtin="python",
)
BROWSER = ToolSpec(
    name="simple_browser",
    description="Browse the web.",
    parameters={"type": "object", "properties": {"action": {"type": "string"}}},
    raw_arg="action",
    glm_builtin="simple_browser",
)
TOOLS = [WEATHER, PYTHON, BROWSER]


def conversation():
    return [
        SystemMessage(content="Answer briefly."),
        UserMessage(content="北京天气怎么样？再算一下 2**10。"),
        AssistantMessage(tool_calls=[ToolCall(id="c1", name="get_weather", arguments={"city": "北京", "unit": "c"})]),
        ToolMessage(tool_call_id="c1", name="get_weather", content='{"temp": 22, "sky": "晴"}'),
        AssistantMessage(content="Let me compute.", tool_calls=[ToolCall(id="c2", name="python", arguments={"code": "print(2**10)"})]),
        ToolMessage(tool_call_id="c2", name="python", content="1024"),
        AssistantMessage(content="北京 22°C，晴。2**10 = 1024。"),
        UserMessage(content="谢谢"),
    ]


def hf_render(template: str, messages: list[dict], tools: list[dict] | None = None) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], tools=tools, chat_template=template, add_generation_prompt=True
    )
    return rendered[0]


def test_glm4_render_matches_official_template_byte_for_byte():
    template = (DATA / "glm4_9b_chat_template.jinja").read_text(encoding="utf-8")
    function = {"name": WEATHER.name, "description": WEATHER.description, "parameters": WEATHER.parameters}
    hf_messages = [
        {"role": "system", "content": "", "tools": [{"type": "function", "function": function}, {"type": "python"}, {"type": "simple_browser"}]},
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "北京天气怎么样？再算一下 2**10。"},
        {"role": "assistant", "metadata": "get_weather", "content": json.dumps({"city": "北京", "unit": "c"}, ensure_ascii=False)},
        {"role": "observation", "content": '{"temp": 22, "sky": "晴"}'},
        {"role": "assistant", "content": "Let me compute."},
        {"role": "assistant", "metadata": "python", "content": "print(2**10)"},
        {"role": "observation", "content": "1024"},
        {"role": "assistant", "content": "北京 22°C，晴。2**10 = 1024。"},
        {"role": "user", "content": "谢谢"},
    ]
    expected = hf_render(template, hf_messages)
    ours = get_dialect("glm4").render(conversation(), TOOLS)
    assert ours == expected
    # Sanity on the shape the research documents.
    assert ours.startswith("[gMASK]<sop><|system|>\n你是一个名为 ChatGLM")
    assert "<|assistant|>get_weather\n{" in ours and ours.endswith("<|user|>\n谢谢<|assistant|>")


def test_glm4_render_without_tools_has_no_tool_block():
    text = get_dialect("glm4").render([UserMessage(content="你好")], [])
    assert text == "[gMASK]<sop><|user|>\n你好<|assistant|>"


def test_hermes_render_matches_qwen_template_byte_for_byte():
    template = (DATA / "qwen2.5_coder_chat_template.jinja").read_text(encoding="utf-8")
    hf_messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "北京天气怎么样？再算一下 2**10。"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "北京", "unit": "c"}}}]},
        {"role": "tool", "content": '{"temp": 22, "sky": "晴"}'},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [{"type": "function", "function": {"name": "python", "arguments": {"code": "print(2**10)"}}}]},
        {"role": "tool", "content": "1024"},
        {"role": "assistant", "content": "北京 22°C，晴。2**10 = 1024。"},
        {"role": "user", "content": "谢谢"},
    ]
    expected = hf_render(template, hf_messages, tools=[t.openai_schema() for t in TOOLS])
    assert get_dialect("hermes").render(conversation(), TOOLS) == expected


def test_hermes_render_parallel_results_share_one_user_turn_and_default_system():
    template = (DATA / "qwen2.5_coder_chat_template.jinja").read_text(encoding="utf-8")
    messages = [
        UserMessage(content="weather in A and B"),
        AssistantMessage(tool_calls=[ToolCall(id="a", name="get_weather", arguments={"city": "A"}), ToolCall(id="b", name="get_weather", arguments={"city": "B"})]),
        ToolMessage(tool_call_id="a", name="get_weather", content="1"),
        ToolMessage(tool_call_id="b", name="get_weather", content="2"),
    ]
    hf = [
        {"role": "user", "content": "weather in A and B"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": c}}} for c in "AB"]},
        {"role": "tool", "content": "1"},
        {"role": "tool", "content": "2"},
    ]
    assert get_dialect("hermes").render(messages, [WEATHER]) == hf_render(template, hf, [WEATHER.openai_schema()])
    assert get_dialect("hermes").render(messages[:1], []) == hf_render(template, hf[:1])


def test_glm4_0414_render_shape():
    # The GGUF-shipped glm-4-9b-0414 template renders exactly this (research §2.4): no
    # self-introduction, tools as JSON with indent 4, calls as `name\n{json}`.
    function = json.dumps({"name": WEATHER.name, "description": WEATHER.description, "parameters": WEATHER.parameters}, ensure_ascii=False, indent=4)
    messages = [
        UserMessage(content="北京天气"),
        AssistantMessage(content="<think>need weather</think>", tool_calls=[ToolCall(name="get_weather", arguments={"city": "北京"})]),
        ToolMessage(tool_call_id="x", name="get_weather", content="22"),
    ]
    expected = (
        "[gMASK]<sop><|system|>\n# 可用工具\n\n## get_weather\n\n" + function + "\n在调用上述函数时，请使用 Json 格式表示调用的参数。"
        '<|user|>\n北京天气<|assistant|>get_weather\n{"city": "北京"}<|observation|>\n22<|assistant|>'
    )
    assert get_dialect("glm4_0414").render(messages, [WEATHER]) == expected


def stream_parse(name: str, text: str, tools=TOOLS, chunk: int = 3):
    parser = get_dialect(name).parser(tools)
    events = []
    for i in range(0, len(text), chunk):
        events += parser.feed(text[i : i + chunk])
    events += parser.finish()
    text_out = "".join(e.text for e in events if isinstance(e, TextDelta))
    calls = [e.call for e in events if isinstance(e, ToolCallReady)]
    return text_out, calls, events


# Malformed and odd outputs real models produce (GLM-4 issues #50, #119, #124; Qwen2.5-Coder,
# research/embedded_models.md §4), each with what the parser must make of it.
GLM4_CASES = [
    ("plain answer after the empty metadata line", "\n北京今天晴。", "北京今天晴。", []),
    ("function call with JSON body", 'get_weather\n{"city": "北京"}', "", [("get_weather", {"city": "北京"})]),
    ("stop token leaked into the body (#50)", 'get_weather\n{"city": "A"}<|observation|>', "", [("get_weather", {"city": "A"})]),
    ("built-in raw code body", "python\nimport math\nprint(math.pi)", "", [("python", {"code": "import math\nprint(math.pi)"})]),
    ("built-in body in a code fence", "python\n```python\nprint(1)\n```", "", [("python", {"code": "print(1)"})]),
    ("browser action line", 'simple_browser\nsearch("GLM-4", recency_days=7)', "", [("simple_browser", {"action": 'search("GLM-4", recency_days=7)'})]),
    ("JSON in a fence", 'get_weather\n```json\n{"city": "B"}\n```', "", [("get_weather", {"city": "B"})]),
    ("doubled braces", 'get_weather\n{{"city": "C"}}', "", [("get_weather", {"city": "C"})]),
    ("trailing prose after JSON", 'get_weather\n{"city": "D"} I will check.', "", [("get_weather", {"city": "D"})]),
    ("0414: two calls in one turn", 'get_weather\n{"city": "A"}<|assistant|>get_weather\n{"city": "B"}', "", [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})]),
    ("text, then a call", '\nLet me check.<|assistant|>get_weather\n{"city": "E"}', "Let me check.", [("get_weather", {"city": "E"})]),
    ("prose whose first line looks like a word", "Hello\nworld", "Hello\nworld", []),
    ("answer without the metadata newline", "北京今天晴", "北京今天晴", []),
    ("end of turn token", "\nDone.<|user|>ignored", "Done.", []),
]


@pytest.mark.parametrize("label,text,want_text,want_calls", GLM4_CASES, ids=[c[0] for c in GLM4_CASES])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_glm4_parser_handles_real_outputs(label, text, want_text, want_calls, chunk):
    got_text, calls, _ = stream_parse("glm4", text, chunk=chunk)
    assert got_text == want_text
    assert [(c.name, c.arguments) for c in calls] == want_calls
    assert all(c.arguments_error is None for c in calls)


def test_glm4_parser_reports_unparsable_arguments_and_unknown_tools():
    _, calls, _ = stream_parse("glm4", 'get_weather\n{"city": "A",,}')
    assert calls[0].name == "get_weather" and calls[0].arguments_error and calls[0].raw_arguments == '{"city": "A",,}'
    _, calls, _ = stream_parse("glm4", 'send_email\n{"to": "x"}')
    assert [(c.name, c.arguments) for c in calls] == [("send_email", {"to": "x"})]  # the loop reports it unknown


def test_glm4_plain_text_streams_before_the_turn_ends():
    parser = get_dialect("glm4").parser(TOOLS)
    assert parser.feed("\n") == []
    first = parser.feed("The answer is")
    assert "".join(e.text for e in first) == "The answer is"


HERMES_CASES = [
    ("tagged call", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "A"}}\n</tool_call>', "", [("get_weather", {"city": "A"})]),
    ("fenced JSON, no tags (Qwen-Coder)", '```json\n{"name": "python", "arguments": {"code": "print(1)"}}\n```', "", [("python", {"code": "print(1)"})]),
    ("doubled braces (Qwen-Coder follow-up)", '{{"name": "python", "arguments": {{"code": "print(2)"}}}}', "", [("python", {"code": "print(2)"})]),
    ("bare JSON object", '{"name": "get_weather", "arguments": {"city": "B"}}', "", [("get_weather", {"city": "B"})]),
    ("arguments as a JSON string", '<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"C\\"}"}</tool_call>', "", [("get_weather", {"city": "C"})]),
    ("parameters instead of arguments", '<tool_call>{"name": "get_weather", "parameters": {"city": "D"}}</tool_call>', "", [("get_weather", {"city": "D"})]),
    ("two tagged calls", '<tool_call>{"name": "get_weather", "arguments": {"city": "A"}}</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {"city": "B"}}</tool_call>', "", [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})]),
    ("text then a call", 'Sure.\n<tool_call>{"name": "get_weather", "arguments": {"city": "E"}}</tool_call>', "Sure.\n", [("get_weather", {"city": "E"})]),
    ("a code fence that is not a call stays text", "Use:\n```python\nprint(1)\n```\nok", "Use:\n```python\nprint(1)\n```\nok", []),
    ("JSON data that is not a call stays text", '{"a": 1}\nthat is JSON', '{"a": 1}\nthat is JSON', []),
    ("plain answer with the end token", "The capital is Tokyo.<|im_end|>", "The capital is Tokyo.", []),
    # Seen from the embedded model in an eval run: the tools block echoed, then a call whose
    # opening brace is doubled but whose closing braces are not.
    ("echoed tools block, half-doubled braces", '<tools></tools>\n\n{{"name": "python", "arguments": {"code": "print(48 * 3)"}}', "", [("python", {"code": "print(48 * 3)"})]),
    ("echoed tools block alone", "<tools></tools>", "", []),
    ("a call inside an echoed tools block", '<tools>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tools>', "", [("get_weather", {"city": "Oslo"})]),
]


@pytest.mark.parametrize("label,text,want_text,want_calls", HERMES_CASES, ids=[c[0] for c in HERMES_CASES])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_hermes_parser_handles_real_outputs(label, text, want_text, want_calls, chunk):
    got_text, calls, _ = stream_parse("hermes", text, chunk=chunk)
    assert got_text == want_text
    assert [(c.name, c.arguments) for c in calls] == want_calls


def test_hermes_broken_json_in_tags_becomes_an_arguments_error():
    _, calls, _ = stream_parse("hermes", '<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call>')
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].arguments_error


def test_hermes_plain_answer_streams_immediately():
    parser = get_dialect("hermes").parser(TOOLS)
    events = parser.feed("The capital of Japan is")
    assert "".join(e.text for e in events) == "The capital of Japan is"


def test_unknown_dialect_is_a_clear_error():
    with pytest.raises(ValueError, match="glm4, glm4_0414, hermes"):
        get_dialect("llama3")
