"""Chat templates render our conversations exactly as transformers' `apply_chat_template` does."""

from __future__ import annotations

import json

import pytest

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.messages import (
    AssistantMessage,
    SystemMessage,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from glm_agent.engine.embedded import embedded_model_path, smollm2_path
from glm_agent.engine.loaders.gguf import GGUFCheckpoint
from glm_agent.models.templates import (
    ChatTemplate,
    ChatTemplateError,
    find_chat_template,
    messages_to_dicts,
)

PY = ToolSpec(
    name="python",
    description="Run Python code; returns stdout. <b>Stateful</b> & fast.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
SEARCH = ToolSpec(
    name="web_search",
    description="Search the web (中文 ok).",
    parameters={"type": "object", "properties": {"query": {"type": "string"}, "n": {"type": "integer"}}},
)
CALL = ToolCall(id="call_1", name="python", arguments={"code": "print(6 * 7)"})
CALL2 = ToolCall(id="call_2", name="web_search", arguments={"query": "天气 Beijing", "n": 3})
CONVERSATION = [
    SystemMessage(content="You are terse."),
    UserMessage(content="What is 6*7? Then search the weather."),
    AssistantMessage(content="", tool_calls=[CALL, CALL2]),
    ToolMessage(tool_call_id="call_1", name="python", content="42\n"),
    ToolMessage(tool_call_id="call_2", name="web_search", content='[{"title": "晴", "url": "x"}]'),
    AssistantMessage(content="6*7 = 42, and it is sunny."),
    UserMessage(content="Thanks! <|im_end|> is just text here."),
]


def _transformers_render(template: str, messages, tools, **kw) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        conversations=[messages], tools=tools, chat_template=template, add_generation_prompt=True, **kw
    )
    return rendered[0]


@pytest.fixture(scope="module")
def qwen_template() -> str:
    return GGUFCheckpoint(embedded_model_path(progress=False)).chat_template


@pytest.mark.parametrize("with_system", [True, False])
@pytest.mark.parametrize("tools", [[PY, SEARCH], []])
def test_qwen_template_matches_transformers(qwen_template, with_system, tools):
    conv = CONVERSATION if with_system else CONVERSATION[1:]
    ours = ChatTemplate(qwen_template).render(conv, tools)
    ref = _transformers_render(
        qwen_template, messages_to_dicts(conv), [t.openai_schema() for t in tools] or None
    )
    assert ours == ref
    if tools:
        assert '"name": "python"' in ours and "<tools>" in ours
        assert '<tool_call>\n{"name": "web_search", "arguments": {"query": "天气 Beijing", "n": 3}}\n</tool_call>' in ours
        assert "<tool_response>\n42\n\n</tool_response>" in ours
    assert ours.endswith("<|im_start|>assistant\n")


def test_smollm2_template_matches_transformers():
    template = GGUFCheckpoint(smollm2_path()).chat_template
    conv = [UserMessage(content="Hi"), AssistantMessage(content="Hello!"), UserMessage(content="Capital of France?")]
    ours = ChatTemplate(template).render(conv)
    assert ours == _transformers_render(template, messages_to_dicts(conv), None)
    assert ours.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_messages_to_dicts_shape():
    d = messages_to_dicts(CONVERSATION)
    assert d[2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "python", "arguments": {"code": "print(6 * 7)"}}},
            {"id": "call_2", "type": "function",
             "function": {"name": "web_search", "arguments": {"query": "天气 Beijing", "n": 3}}},
        ],
    }
    assert d[3] == {"role": "tool", "tool_call_id": "call_1", "name": "python", "content": "42\n"}


def test_helpers_and_sandbox():
    t = ChatTemplate(
        "{{ bos_token }}{% for m in messages %}{% generation %}{{ m.content | tojson }}{% endgeneration %}"
        "{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}{{ strftime_now('%Y') | length }}",
        bos_token="<s>",
    )
    out = t.render([UserMessage(content="<a & b>"), UserMessage(content="x"), UserMessage(content="y")])
    assert out == '<s>"<a & b>""x"4'  # tojson does not HTML-escape; loop controls work
    with pytest.raises(ChatTemplateError, match="refused the conversation: no system role"):
        ChatTemplate("{{ raise_exception('no system role') }}").render([])
    with pytest.raises(ChatTemplateError, match="syntax error"):
        ChatTemplate("{% for m in messages %}")
    with pytest.raises(ChatTemplateError):  # the sandbox blocks attribute escapes
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render([])


def test_find_chat_template(tmp_path):
    assert find_chat_template(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": [
        {"name": "default", "template": "DEFAULT"}, {"name": "tool_use", "template": "TOOLS"}]}))
    assert find_chat_template(tmp_path) == "TOOLS"
    assert find_chat_template(tmp_path, want_tools=False) == "DEFAULT"
    (tmp_path / "chat_template.jinja").write_text("JINJA")
    assert find_chat_template(tmp_path) == "JINJA"


@pytest.mark.parametrize(
    "source,content,text,contents",
    [
        ("{{ '<|im_start|>' ~ messages[0].content ~ '<|im_end|>' }}", "hi", "<|im_start|>hi<|im_end|>", ["hi"]),
        ("{{ ('<|im_start|>' + messages[0].content).strip() }}", "  ", "<|im_start|>", []),
        ("{{ ('<|im_start|>' + messages[0].content)|trim }}", "  ", "<|im_start|>", []),
        ("{{ ('<|im_start|>user\\n' + messages[0].content + '<|im_end|>\\n')|trim }}", " hi ",
         "<|im_start|>user\n hi <|im_end|>", [" hi "]),
        ("{% macro turn(role, c) %}<|im_start|>{{ role }}\n{{ c }}<|im_end|>{% endmacro %}"
         "{{ turn(messages[0].role, messages[0].content) }}", "hi", "<|im_start|>user\nhi<|im_end|>", ["hi"]),
        ("{% macro open(c) %}{% if c %}<|im_start|>{% endif %}{% endmacro %}{{ open(messages[0].content) }}"
         "{{ messages[0].content }}", "hi", "<|im_start|>hi", ["hi"]),
        ("{{ messages[0].content[:2] }}|{{ messages[0].content[2:]|upper }}", "abcd", "ab|CD", ["ab", "CD"]),
        ("{{ messages[0].content.split('</think>')[-1].strip() }}<|im_end|>", "<think>r</think> ans ", "ans<|im_end|>", ["ans"]),
        ("{% set ns = namespace(c='') %}{% for m in messages %}{% set ns.c = ns.c + m.content %}{% endfor %}"
         "<|im_start|>{{ ns.c }}", "hi", "<|im_start|>hi", ["hi"]),
        ("{{ messages[0].content if messages[0].content else '<|im_end|>' }}", "", "<|im_end|>", []),
        ("<s>{{ messages[0] | tojson }}", "x", '<s>{"role": "user", "content": "x"}', ['{"role": "user", "content": "x"}']),
    ],
)
def test_render_prompt_marks_exactly_the_content(source, content, text, contents):
    """Content is followed through what templates do to it; markup next to it stays markup."""
    conv = [UserMessage(content=content)]
    prompt = ChatTemplate(source).render_prompt(conv, markup_tokens=["<|im_start|>", "<|im_end|>"])
    assert prompt.text == text == _transformers_render(source, messages_to_dicts(conv), None)
    assert prompt.content_texts() == contents
