"""The GLM-4-0414 / GLM-Z1 dialect.

Same turn syntax as glm4, with three differences: the tools block has no self-introduction
and takes tools from the top level (`tools=`), there are no built-in tool types (every tool
is a JSON function in the prompt and in history), and the model may emit several
`name\\n{json}` calls in one turn, separated by `<|assistant|>`. Z1 reasoning (`…</think>`)
is dropped from history. Parsing is glm4's (a raw built-in body is still read as one).

    [gMASK]<sop><|system|>
    # 可用工具

    ## get_weather

    {...}
    在调用上述函数时，请使用 Json 格式表示调用的参数。<|user|>
    ...<|assistant|>
"""

from __future__ import annotations

from typing import Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.messages import AssistantMessage, Message
from glm_agent.engine.prompt import Prompt, mark
from glm_agent.models.dialects.base import Dialect, StreamParser
from glm_agent.models.dialects.glm4 import (
    ASSISTANT,
    FUNCTION_SUFFIX,
    GLM_STOP_STRINGS,
    GLMStreamParser,
    function_json,
    render_turns,
)

__all__ = ["GLM4_0414Dialect"]


def _visible(message: Message) -> Message:
    if isinstance(message, AssistantMessage) and "</think>" in message.content:
        return message.model_copy(update={"content": message.content.split("</think>")[-1].strip()})
    return message


class GLM4_0414Dialect(Dialect):
    name = "glm4_0414"
    stop_strings = GLM_STOP_STRINGS

    def render_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True
    ) -> Prompt:
        text = "[gMASK]<sop>"
        if tools:
            text += "<|system|>\n# 可用工具"
            for spec in tools:
                text += f"\n\n## {mark(spec.name)}\n\n{mark(function_json(spec))}\n{FUNCTION_SUFFIX}"
        text += render_turns([_visible(m) for m in messages], {}, builtins=False)
        return Prompt.parse(text + (ASSISTANT if add_generation_prompt else ""))

    def parser(self, tools: Sequence[ToolSpec], stop: Sequence[str] = ()) -> StreamParser:
        return GLMStreamParser(tools, stop_strings=(*self.stop_strings, *stop))
