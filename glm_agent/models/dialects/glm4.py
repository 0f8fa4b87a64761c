"""The glm-4-9b-chat dialect (the 2024 "All Tools" format).

Render, exactly as the model's HF chat template does:

    [gMASK]<sop><|system|>
    你是一个名为 ChatGLM 的人工智能助手。…

    # 可用工具
    ## get_weather

    { ...the function, JSON with indent 4... }
    在调用上述函数时，请使用 Json 格式表示调用的参数。<|user|>
    ...<|assistant|>get_weather
    {"city": "Beijing"}<|observation|>
    {"temp": 22}<|assistant|>
    answer

A turn is `<|role|>{metadata}\n{content}` with no end-of-turn token. The model answers after a
bare `<|assistant|>`: an empty first line means text, a tool name means a call whose body is
JSON (functions) or raw text (the built-ins `python`, `simple_browser`, `cogview`).
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from glm_agent.core.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from glm_agent.core.events import TextDelta, ToolCallReady
from glm_agent.core.contracts import ToolSpec
from glm_agent.models.dialects.base import Dialect, ParsedEvent, StreamParser, build_call, held_suffix
from glm_agent.engine.prompt import Prompt, mark

__all__ = ["GLM4Dialect", "GLMStreamParser", "SELF_INTRO", "BUILTIN_PROMPTS", "GLM_STOP_STRINGS"]

SELF_INTRO = (
    "你是一个名为 ChatGLM 的人工智能助手。你是基于智谱AI训练的语言模型 GLM-4 模型开发的，"
    "你的任务是针对用户的问题和要求提供适当的答复和支持。"
)
FUNCTION_SUFFIX = "在调用上述函数时，请使用 Json 格式表示调用的参数。"

BUILTIN_PROMPTS = {
    "python": (
        "当你向 `python` 发送包含 Python 代码的消息时，该代码将会在一个有状态的 Jupyter notebook 环境中执行。\n"
        "`python` 返回代码执行的输出，或在执行 60 秒后返回超时。\n"
        "`/mnt/data` 将会持久化存储你的文件。在此会话中，`python` 无法访问互联网。"
        "不要使用 `python` 进行任何网络请求或者在线 API 调用，这些在线内容的访问将不会成功。"
    ),
    "simple_browser": (
        "你可以使用 `simple_browser` 工具。该工具支持以下函数：\n"
        "`search(query: str, recency_days: int)`：使用搜索引擎进行查询并显示结果，可以使用 `recency_days` 参数控制搜索内容的时效性。\n"
        "`mclick(ids: list[int])`：获取一系列指定 id 的页面内容。每次调用时，须选择3-10个页面。"
        "选择多个角度的页面，同时尽可能选择可信任的信息来源。考虑到部分页面是无法加载的，你也可以多打开一些可能有用的页面而不用担心内容过多。\n"
        "`open_url(url: str)`：打开指定的 URL。\n\n"
        "使用 `【{引用 id}†{引用文本}】` 来引用内容。\n\n"
        "操作步骤：1. 使用 `search` 来获得信息列表; 2. 使用 `mclick` 来获取指定 ID 页面的内容; 3. 根据获得的内容进行回复。在回复中应当引用信息来源。\n"
        " 如果用户提供了 URL，也可以用 `open_url` 直接打开页面。\n"
        "如果初次搜索结果没有找到合适的信息，也可以再次使用 `search` 进行搜索。"
    ),
    "cogview": (
        "如果用户的请求中包含了对图像的描述，你可以使用 `cogview` 来生成图像并展示给用户。你需要向 `cogview` 发送图像描述，规则：\n"
        "- 发送给 `cogview` 的消息必须使用英语。用户的中文描述必须完全翻译为英语。\n"
        "- 应当尽可能详细地描述图像生成的需求，需求描述约 100 英文单词。\n"
        "- 保持用户原始描述的意图。不要虚构内容或者没见过的人物。\n"
        "- 如无特殊说明，所在地为中国，持有中国立场并遵循中国社会主义价值观。"
    ),
}

GLM_STOP_STRINGS = ("<|user|>", "<|observation|>", "<|endoftext|>")
ASSISTANT = "<|assistant|>"
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w.\-]*$")


def function_json(spec: ToolSpec) -> str:
    """The function as the template's `tojson(indent=4)` prints it (non-ASCII kept)."""
    function = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
    return json.dumps(function, ensure_ascii=False, indent=4)


def call_body(name: str, arguments: dict, tools: dict[str, ToolSpec]) -> str:
    spec = tools.get(name)
    if spec is not None and spec.raw_arg and set(arguments) == {spec.raw_arg}:
        return str(arguments[spec.raw_arg])
    return json.dumps(arguments, ensure_ascii=False)


def render_turns(messages: Sequence[Message], tools: dict[str, ToolSpec]) -> str:
    """The `<|role|>{metadata}\\n{content}` turns shared by glm4 and glm4_0414 (content marked)."""
    out: list[str] = []

    def turn(role: str, metadata: str, content: str) -> None:
        if content:  # the template skips empty turns
            out.append(f"<|{role}|>{mark(metadata)}\n{mark(content)}")

    for message in messages:
        if isinstance(message, SystemMessage):
            turn("system", "", message.content)
        elif isinstance(message, UserMessage):
            turn("user", "", message.content)
        elif isinstance(message, AssistantMessage):
            turn("assistant", "", message.content)
            for call in message.tool_calls:
                turn("assistant", call.name, call_body(call.name, call.arguments, tools))
        elif isinstance(message, ToolMessage):
            turn("observation", message.metadata or "", message.content)
    return "".join(out)


class GLM4Dialect(Dialect):
    name = "glm4"
    stop_strings = GLM_STOP_STRINGS

    def __init__(self, self_intro: str = SELF_INTRO):
        self.self_intro = self_intro

    def tools_block(self, tools: Sequence[ToolSpec]) -> str:
        """The system turn listing the tools; tool names and specs are marked content."""
        parts = [f"<|system|>\n{self.self_intro}\n\n# 可用工具"]
        for spec in tools:
            # One newline before `##`, not the two the template source shows: HF renders chat
            # templates with trim_blocks, which eats the newline after each `{% if %}` tag.
            if spec.glm_builtin in BUILTIN_PROMPTS:
                parts.append(f"\n## {spec.glm_builtin}\n\n{BUILTIN_PROMPTS[spec.glm_builtin]}")
            else:
                parts.append(f"\n## {mark(spec.name)}\n\n{mark(function_json(spec))}\n{FUNCTION_SUFFIX}")
        return "".join(parts)

    def render_prompt(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], add_generation_prompt: bool = True
    ) -> Prompt:
        by_name = {t.name: t for t in tools}
        text = "[gMASK]<sop>"
        if tools:
            text += self.tools_block(tools)
        text += render_turns(messages, by_name)
        return Prompt.parse(text + (ASSISTANT if add_generation_prompt else ""))

    def parser(self, tools: Sequence[ToolSpec]) -> StreamParser:
        return GLMStreamParser(tools, stop_strings=self.stop_strings)


class GLMStreamParser(StreamParser):
    """Incremental parser for `<|assistant|>`-separated segments whose first line is metadata.

    States: `header` (reading the metadata line), `text` (streaming an answer), `call`
    (collecting a call body until the next `<|assistant|>` or the end).
    """

    def __init__(self, tools: Sequence[ToolSpec], stop_strings: Sequence[str] = GLM_STOP_STRINGS):
        self.tools = {t.name: t for t in tools}
        # The template names built-ins by their GLM type; accept both names.
        for spec in tools:
            if spec.glm_builtin:
                self.tools.setdefault(spec.glm_builtin, spec)
        self.stop_strings = tuple(stop_strings)
        self.buf = ""
        self.mode = "header"
        self.call_name = ""
        self.stopped = False

    def _resolve(self, name: str) -> str:
        spec = self.tools.get(name)
        return spec.name if spec is not None else name

    def feed(self, text: str) -> list[ParsedEvent]:
        if self.stopped:
            return []
        self.buf += text
        for stop in self.stop_strings:
            cut = self.buf.find(stop)
            if cut >= 0:
                self.buf = self.buf[:cut]
                self.stopped = True
        return self._drain(final=False)

    def finish(self) -> list[ParsedEvent]:
        events = self._drain(final=True)
        self.stopped = True
        return events

    def _could_be_tool_name(self, head: str) -> bool:
        head = head.strip()
        if not head:
            return True
        return any(name.startswith(head) for name in self.tools) or (len(head) <= 64 and bool(_IDENTIFIER.match(head)))

    def _drain(self, final: bool) -> list[ParsedEvent]:
        events: list[ParsedEvent] = []
        while True:
            if self.mode == "header":
                newline = self.buf.find("\n")
                marker = self.buf.find(ASSISTANT)
                if 0 <= marker and (newline < 0 or marker < newline):
                    # `<|assistant|>` with no metadata line: an empty segment, skip it.
                    header, self.buf = self.buf[:marker], self.buf[marker + len(ASSISTANT) :]
                    if header.strip():
                        events.append(TextDelta(header))
                    continue
                if newline < 0:
                    if final or self.stopped:
                        head = self.buf.strip()
                        if head and head in self.tools:
                            events.append(ToolCallReady(build_call(self._resolve(head), "", self.tools)))
                        elif self.buf:
                            events.append(TextDelta(self.buf))
                        self.buf = ""
                        return events
                    if self._could_be_tool_name(self.buf):
                        return events
                    self.mode = "text"
                    continue
                header, rest = self.buf[:newline].strip(), self.buf[newline + 1 :]
                if not header:
                    self.mode, self.buf = "text", rest
                elif header in self.tools:
                    self.mode, self.call_name, self.buf = "call", self._resolve(header), rest
                elif _IDENTIFIER.match(header) and len(header) <= 64:
                    # An unknown name is a call only if a JSON body follows (the loop then
                    # tells the model the tool does not exist); otherwise it was prose.
                    body = rest.lstrip()
                    if not body and not (final or self.stopped):
                        return events
                    if body.startswith("{"):
                        self.mode, self.call_name, self.buf = "call", header, rest
                    else:
                        self.mode = "text"
                else:
                    self.mode = "text"
            elif self.mode == "text":
                marker = self.buf.find(ASSISTANT)
                if marker >= 0:
                    if marker:
                        events.append(TextDelta(self.buf[:marker]))
                    self.mode, self.buf = "header", self.buf[marker + len(ASSISTANT) :]
                    continue
                hold = 0 if (final or self.stopped) else held_suffix(self.buf, (ASSISTANT, *self.stop_strings))
                emit = self.buf[: len(self.buf) - hold]
                if emit:
                    events.append(TextDelta(emit))
                self.buf = self.buf[len(emit) :]
                return events
            else:  # call
                marker = self.buf.find(ASSISTANT)
                if marker < 0 and not (final or self.stopped):
                    return events
                end = marker if marker >= 0 else len(self.buf)
                events.append(ToolCallReady(build_call(self.call_name, self.buf[:end], self.tools)))
                self.buf = self.buf[end + len(ASSISTANT) :] if marker >= 0 else ""
                self.mode = "header"
                if marker < 0:
                    return events
