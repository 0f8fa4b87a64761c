"""Dialects: render byte for byte as the official templates do; parse what real models emit.

The templates are the literal texts (in `data/`): glm-4-9b-chat's Hugging Face chat template,
built-in tool texts included, and the Qwen2.5-Coder template read from the embedded model's
GGUF metadata. They are rendered with transformers' own chat-template renderer, an
implementation nobody here wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.messages import AssistantMessage, SystemMessage, ToolCall, ToolMessage, UserMessage
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
)
BROWSER = ToolSpec(
    name="simple_browser",
    description="Browse the web.",
    parameters={"type": "object", "properties": {"action": {"type": "string"}}},
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
    # Sanity on the shape itself.
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
    # The GGUF-shipped glm-4-9b-0414 template renders exactly this: no
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


# Malformed and odd outputs real models produce (zai-org/GLM-4 issues #50, #119, #124; the
# embedded Qwen2.5-Coder), each with what the parser must make of it.
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
    ("arguments as plain text, a tool with one string argument", '<tool_call>{"name": "python", "arguments": "print(1)"}</tool_call>', "", [("python", {"code": "print(1)"})]),
    ("parameters instead of arguments", '<tool_call>{"name": "get_weather", "parameters": {"city": "D"}}</tool_call>', "", [("get_weather", {"city": "D"})]),
    ("two tagged calls", '<tool_call>{"name": "get_weather", "arguments": {"city": "A"}}</tool_call>\n<tool_call>{"name": "get_weather", "arguments": {"city": "B"}}</tool_call>', "", [("get_weather", {"city": "A"}), ("get_weather", {"city": "B"})]),
    ("text then a call", 'Sure.\n<tool_call>{"name": "get_weather", "arguments": {"city": "E"}}</tool_call>', "Sure.\n", [("get_weather", {"city": "E"})]),
    # A chunk that starts with the newline before the object (it used to slip through as text).
    ("text then a bare call", 'Sure.\n{"name": "get_weather", "arguments": {"city": "E"}}', "Sure.\n", [("get_weather", {"city": "E"})]),
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


# ---- stop strings: one scanner (the parser base) for every dialect and for LocalModel

DIALECTS = ["glm4", "glm4_0414", "hermes"]


def _answer(name: str, text: str) -> str:
    return text if name == "hermes" else "\n" + text  # GLM answers start with an empty metadata line


def feed_chunks(parser, text: str, chunk: int):
    events = []
    for i in range(0, len(text), chunk):
        events += parser.feed(text[i : i + chunk])
    return events


@pytest.mark.parametrize("name", DIALECTS)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 1000])
def test_stop_strings_end_the_turn_whatever_the_chunks(name, chunk):
    dialect = get_dialect(name)
    for stop, extra in ((dialect.stop_strings[0], ()), ("END", ("END",)), ("<|user|>", ("<|user|>",))):
        parser = dialect.parser(TOOLS, stop=extra)
        events = feed_chunks(parser, _answer(name, "The answer is 42.") + stop + " and more text", chunk)
        assert parser.stopped  # known as soon as the stop string is complete: decoding can end
        events += parser.finish()
        assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "The answer is 42."
        assert parser.feed("later text") == [] and parser.finish() == []  # nothing after the end


@pytest.mark.parametrize("name", DIALECTS)
def test_the_earliest_stop_string_wins_and_an_unfinished_one_is_text(name):
    parser = get_dialect(name).parser(TOOLS, stop=["ZZ", "Q!"])
    text, _ = parse_all_text(parser, _answer(name, "one Q! two ZZ three"))
    assert text == "one "
    parser = get_dialect(name).parser(TOOLS, stop=["STOP"])
    held = feed_chunks(parser, _answer(name, "Ends with STO"), 1)
    assert "".join(e.text for e in held).endswith("Ends with ")  # "STO" may still become "STOP"
    assert "".join(e.text for e in parser.finish()) == "STO" and not parser.stopped


@pytest.mark.parametrize("name", DIALECTS)
def test_an_empty_stop_string_is_no_stop(name):
    # The dialect parsers used to cut the whole turn at an empty stop string (it matches at 0).
    text, _ = parse_all_text(get_dialect(name).parser(TOOLS, stop=[""]), _answer(name, "Still here."))
    assert text == "Still here."


@pytest.mark.parametrize("name", ["glm4", "glm4_0414"])
def test_a_stop_string_split_inside_a_call_body_ends_the_call(name):
    parser = get_dialect(name).parser(TOOLS)
    events = parser.feed('get_weather\n{"city": "A"}<|obser')
    assert events == [] and not parser.stopped
    events = parser.feed("vation|>\n{garbage")
    assert parser.stopped and [(e.call.name, e.call.arguments) for e in events] == [("get_weather", {"city": "A"})]


def test_stop_scanner_after_a_hit_gives_nothing():
    from glm_agent.models.dialects.base import StopScanner

    scanner = StopScanner(["<|im_end|>", ""])
    assert scanner.feed("abc<|im_") == "abc" and scanner.feed("end|>def") == "" and scanner.hit
    assert scanner.feed("more") == "" and scanner.flush() == ""  # LocalModel's copy kept returning text


def parse_all_text(parser, text):
    from glm_agent.models.dialects.base import parse_all

    return parse_all(parser, text)


# ---- calls made under a tool's action name (`search(...)` instead of the browser)

BROWSER_SCHEMA = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["search", "mclick", "open_url", "scroll", "find"]},
        "query": {"type": "string"}, "ids": {"type": "array"}, "url": {"type": "string"},
    },
    "required": ["action"],
}
WEB = ToolSpec(name="simple_browser", description="Browse the web.", parameters=BROWSER_SCHEMA)

ROUTED_CASES = [
    # What small models write instead of calling `simple_browser` (Qwen2.5-Coder's fenced and
    # doubled-brace shapes, the tagged Hermes form, GLM's `name\n{json}`).
    ("hermes", '```json\n{"name": "search", "arguments": {"query": "GLM-4 release"}}\n```',
     {"action": "search", "query": "GLM-4 release"}),
    ("hermes", '{{"name": "open_url", "arguments": {{"url": "https://example.com/"}}}}',
     {"action": "open_url", "url": "https://example.com/"}),
    ("hermes", '<tool_call>\n{"name": "mclick", "arguments": {"ids": [0, 2]}}\n</tool_call>',
     {"action": "mclick", "ids": [0, 2]}),
    ("glm4", 'search\n{"query": "GLM-4 release"}', {"action": "search", "query": "GLM-4 release"}),
    ("glm4_0414", 'open_url\n{"url": "https://example.com/"}', {"action": "open_url", "url": "https://example.com/"}),
]


@pytest.mark.parametrize("name,text,arguments", ROUTED_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(ROUTED_CASES)])
@pytest.mark.parametrize("chunk", [1, 1000])
def test_a_call_named_after_an_action_goes_to_its_tool(name, text, arguments, chunk):
    _, calls, _ = stream_parse(name, text, tools=[WEATHER, WEB], chunk=chunk)
    assert [(c.name, c.arguments) for c in calls] == [("simple_browser", arguments)]


def test_action_routing_needs_exactly_one_owner_and_a_readable_call():
    other = ToolSpec(name="docs", description="Search the docs.", parameters=BROWSER_SCHEMA)
    text = '<tool_call>{"name": "search", "arguments": {"query": "x"}}</tool_call>'
    _, calls, _ = stream_parse("hermes", text, tools=[WEB, other])
    assert [c.name for c in calls] == ["search"]  # two tools could mean it: the loop says there is no `search`
    _, calls, _ = stream_parse("hermes", '<tool_call>{"name": "search", "arguments": {"query": }</tool_call>', tools=[WEB])
    assert calls[0].name == "search" and calls[0].arguments_error  # broken arguments are reported as written
    search_tool = ToolSpec(name="search", description="A real search tool.", parameters=WEATHER.parameters)
    _, calls, _ = stream_parse("glm4", 'search\n{"city": "x"}', tools=[WEB, search_tool])
    assert [(c.name, c.arguments) for c in calls] == [("search", {"city": "x"})]  # a real tool keeps its calls


# ---- outputs that mean a call although they are not in the dialect's own shape

@pytest.mark.parametrize("name", ["glm4", "glm4_0414"])
@pytest.mark.parametrize("text,want", [
    ("python\nprint(1)", ("python", {"code": "print(1)"})),
    ('simple_browser\nsearch("GLM-4")', ("simple_browser", {"action": 'search("GLM-4")'})),
    ("cogview\nA red fox in the snow, watercolor.", ("cogview", {"prompt": "A red fox in the snow, watercolor."})),
])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_glm_builtin_header_for_a_missing_tool_is_a_call_not_an_answer(name, text, want, chunk):
    # Only get_weather is registered: the call goes to the loop, which says which tools exist.
    got_text, calls, _ = stream_parse(name, text, tools=[WEATHER], chunk=chunk)
    assert got_text == "" and [(c.name, c.arguments) for c in calls] == [want]


GLM_FOREIGN_CASES = [
    ("hermes block, registered tool", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>',
     "", [("get_weather", {"city": "Oslo"}, None)]),
    ("hermes block after text", '\nLet me look.\n<tool_call>{"name": "get_weather", "arguments": {"city": "B"}}</tool_call>',
     "Let me look.\n", [("get_weather", {"city": "B"}, None)]),
    ("hermes block, unknown tool", '<tool_call>{"name": "send_email", "arguments": {"to": "x"}}</tool_call>',
     "", [("send_email", {"to": "x"}, None)]),
    ("hermes block, broken JSON", '\n<tool_call>{"name": "get_weather", "arguments": {"city": }</tool_call>',
     "", [("get_weather", {}, "error")]),
    ("hermes block without a call", "<tool_call>\nget_weather(city='Oslo')\n</tool_call>", "", [("", {}, "error")]),
    ("hermes block never closed", '\n<tool_call>{"name": "get_weather", "arguments": {"city": "C"}}', "",
     [("get_weather", {"city": "C"}, None)]),
    ("bare call object", '{"name": "get_weather", "arguments": {"city": "D"}}', "", [("get_weather", {"city": "D"}, None)]),
    ("bare call object after the metadata line", '\n{"name": "get_weather", "parameters": {"city": "E"}}', "",
     [("get_weather", {"city": "E"}, None)]),
    ("bare call object after prose", '\nChecking.\n{"name": "get_weather", "arguments": {"city": "F"}}', "Checking.\n",
     [("get_weather", {"city": "F"}, None)]),
    ("JSON that is no call stays an answer", '\n{"name": "Ann", "age": 31}', '{"name": "Ann", "age": 31}', []),
    ("a name alone is no call", '\n{"name": "get_weather"}', '{"name": "get_weather"}', []),
    ("a fenced block stays an answer", '\n```json\n{"name": "get_weather", "arguments": {"city": "G"}}\n```',
     '```json\n{"name": "get_weather", "arguments": {"city": "G"}}\n```', []),
    ("braces inside prose", "\nUse {x} here.\n{not json", "Use {x} here.\n{not json", []),
]


@pytest.mark.parametrize("name", ["glm4", "glm4_0414"])
@pytest.mark.parametrize("label,text,want_text,want_calls", GLM_FOREIGN_CASES, ids=[c[0] for c in GLM_FOREIGN_CASES])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_glm_reads_hermes_blocks_and_call_objects_as_calls(name, label, text, want_text, want_calls, chunk):
    got_text, calls, _ = stream_parse(name, text, chunk=chunk)
    assert got_text == want_text
    assert [(c.name, c.arguments, "error" if c.arguments_error else None) for c in calls] == want_calls


def test_glm_answers_with_code_still_stream():
    parser = get_dialect("glm4").parser(TOOLS)
    parser.feed("\n")
    shown = "".join(e.text for e in parser.feed("Here:\n```python\nprint(1)\n"))
    assert shown == "Here:\n```python\nprint(1)\n"  # a fence is never held back in GLM answers


def test_hermes_tagged_block_without_a_call_is_a_call_error_not_an_answer():
    _, calls, _ = stream_parse("hermes", "<tool_call>\nget_weather(city='Oslo')\n</tool_call>")
    assert len(calls) == 1 and calls[0].name == "" and "not valid JSON" in calls[0].arguments_error


def test_json_arguments_error_is_a_glm_agent_error():
    from glm_agent.core.errors import GlmAgentError
    from glm_agent.models.dialects._json import JSONArgumentsError, loads_tolerant

    with pytest.raises(GlmAgentError, match="not valid JSON"):
        loads_tolerant("{oops")
    assert issubclass(JSONArgumentsError, ValueError)


# A code fence is released as soon as it cannot be a call: the answer streams as it is written.
FENCE_STREAMS = [
    ("a language tag", "Here:\n```python\nprint(1)\nx = 2\n", "Here:\n```python\nprint(1)\nx = 2"),
    ("a tag cut mid-word", "```py", "```py"),
    ("no tag, code inside", "```\nimport os\n", "```\nimport os"),
    ("json tag, prose inside", "```json\nnot a call\n", "```json\nnot a call"),
    ("braces in a code block", "```js\nfunction f() {\n  return {a: 1};\n", "```js\nfunction f() {\n  return {a: 1};"),
    ("a block after a block", "```sh\nls\n```\ntext\n```bash\npwd\n", "```sh\nls\n```\ntext\n```bash\npwd"),
]


@pytest.mark.parametrize("label,text,want_shown", FENCE_STREAMS, ids=[c[0] for c in FENCE_STREAMS])
@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_hermes_code_fence_streams_before_it_closes(label, text, want_shown, chunk):
    parser = get_dialect("hermes").parser(TOOLS)
    events = []
    for i in range(0, len(text), chunk):
        events += parser.feed(text[i : i + chunk])
    shown = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert shown.rstrip("\n ") == want_shown  # only trailing layout may wait for the next piece
    assert not any(isinstance(e, ToolCallReady) for e in events)


FENCE_CASES = [
    ("a call tag inside shown code stays code", "```python\nprint('<tool_call>{\"name\": \"python\"}')\n```\nok",
     "```python\nprint('<tool_call>{\"name\": \"python\"}')\n```\nok", []),
    ("a call after a shown code block", "```python\nx = 1\n```\n<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}</tool_call>",
     "```python\nx = 1\n```\n", [("get_weather", {"city": "A"})]),
    ("a fenced call after a shown code block", "```sh\nls\n```\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}\n```",
     "```sh\nls\n```\n", [("get_weather", {"city": "B"})]),
    ("a fenced call without a tag", "```\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"C\"}}\n```", "", [("get_weather", {"city": "C"})]),
    ("a json fence that is data stays text", "```json\n{\"a\": 1}\n```\nthat is JSON", "```json\n{\"a\": 1}\n```\nthat is JSON", []),
    ("an unclosed code fence at the end", "```python\nprint(1)", "```python\nprint(1)", []),
]


@pytest.mark.parametrize("label,text,want_text,want_calls", FENCE_CASES, ids=[c[0] for c in FENCE_CASES])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_hermes_fences_calls_and_code(label, text, want_text, want_calls, chunk):
    got_text, calls, _ = stream_parse("hermes", text, chunk=chunk)
    assert got_text == want_text
    assert [(c.name, c.arguments) for c in calls] == want_calls


def test_hermes_json_fence_is_held_until_it_resolves():
    parser = get_dialect("hermes").parser(TOOLS)
    shown = "".join(e.text for e in parser.feed('Calling:\n```json\n{"name": "get_weather", "arguments": {"ci'))
    assert shown == "Calling:\n"
    events = parser.feed('ty": "D"}}\n```') + parser.finish()
    assert [e.call.arguments for e in events if isinstance(e, ToolCallReady)] == [{"city": "D"}]


def _nudges():
    from glm_agent.engine.loading import TOOL_ERROR_NUDGE, TOOL_RESULT_NUDGE

    return [TOOL_RESULT_NUDGE, TOOL_ERROR_NUDGE]


@pytest.mark.parametrize("nudge", _nudges(), ids=["result", "error"])
@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_hermes_echoed_tool_response_and_nudge_never_reach_the_user(nudge, chunk):
    echoes = [  # how Qwen-Coder repeats its prompt: the whole block, the nudge alone, the tags alone
        f"<tool_response>\n42\n\n{nudge}\n</tool_response>\nThe answer is 42.",
        f"The answer is 42.\n\n{nudge}",
        "<tool_response>\nThe answer is 42.\n</tool_response>",
    ]
    for text in echoes:
        shown, calls, _ = stream_parse("hermes", text, chunk=chunk)
        assert "The answer is 42." in shown and not calls
        for prompt_text in ("<tool_response>", "</tool_response>", nudge, nudge[:20]):
            assert prompt_text not in shown


def test_hermes_prompt_echo_inside_shown_code_stays_code():
    text = "```xml\n<tool_response>\n1\n</tool_response>\n```"
    assert stream_parse("hermes", text)[0] == text
