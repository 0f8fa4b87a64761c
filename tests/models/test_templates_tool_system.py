"""The runtime's default system prompt when tools are offered and the caller gave none."""

from __future__ import annotations

import pytest

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.messages import SystemMessage, UserMessage
from glm_agent.engine.embedded import embedded_model_path
from glm_agent.engine.loaders.gguf import GGUFCheckpoint
from glm_agent.models.templates import TOOL_SYSTEM, ChatTemplate, with_tool_system

PY = ToolSpec(
    name="python",
    description="Run Python code.",
    parameters={"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]},
)
TOKENS = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def qwen() -> ChatTemplate:
    return ChatTemplate(GGUFCheckpoint(embedded_model_path(progress=False)).chat_template)


def test_tools_without_a_system_prompt_get_the_tool_system_prompt(qwen):
    conv = [UserMessage(content="Thanks, that's all!")]
    text = qwen.render_prompt(conv, [PY], markup_tokens=TOKENS).text
    # It takes the place of the template's own fallback identity line, inside the system turn.
    assert text.startswith("<|im_start|>system\n" + TOOL_SYSTEM + "\n\n# Tools")
    assert "You are Qwen" not in text
    assert text == qwen.render([SystemMessage(content=TOOL_SYSTEM), *conv], [PY])


@pytest.mark.parametrize(
    ("conv", "tools", "option"),
    [
        ([SystemMessage(content="You are terse."), UserMessage(content="hi")], [PY], {}),  # the caller's own
        ([UserMessage(content="hi")], [], {}),  # no tools: the template's own default
        ([UserMessage(content="hi")], [PY], {"tool_system": None}),  # switched off
    ],
)
def test_otherwise_the_template_renders_exactly_as_its_own(qwen, conv, tools, option):
    text = qwen.render_prompt(conv, tools, markup_tokens=TOKENS, **option).text
    assert text == qwen.render(conv, tools)
    assert TOOL_SYSTEM not in text


def test_with_tool_system_keeps_dict_and_message_system_turns():
    assert with_tool_system([{"role": "system", "content": "mine"}])[0] == {"role": "system", "content": "mine"}
    out = with_tool_system([UserMessage(content="hi")])
    assert isinstance(out[0], SystemMessage) and out[0].content == TOOL_SYSTEM and len(out) == 2
    assert with_tool_system([])[0].content == TOOL_SYSTEM
