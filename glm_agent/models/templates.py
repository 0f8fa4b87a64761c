"""Render a model's own Jinja chat template, the way transformers' `apply_chat_template` does.

Templates come from the checkpoint (`tokenizer_config.json`, `chat_template.jinja`,
`chat_template.json`, or GGUF `tokenizer.chat_template`) and are untrusted code, so they run in
jinja2's immutable sandbox with the same helpers transformers provides (`tojson` without HTML
escaping, `raise_exception`, `strftime_now`, a `{% generation %}` tag, loop controls).
Our pydantic messages are turned into the HF/OpenAI dict shape first.

`render_prompt` also says which characters are message content (`glm_agent.engine.prompt`), so
that a `<|im_start|>` inside a tool result is encoded as text, not as the control token: content
is followed through the template (`glm_agent.models.template_marks`). When that fails (marks
cut apart, or a text that differs from the plain rendering), the template is rendered again
with only the token strings inside content marked, which is safe for any template.

`render_prompt` (the prompt the runtime runs) gives a conversation with tools but no system
message of its own the `TOOL_SYSTEM` prompt, which says when not to call a tool; `render` stays
the template's exact output.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Collection, Sequence

from glm_agent.core.contracts import ToolSpec
from glm_agent.core.errors import ModelError
from glm_agent.core.messages import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from glm_agent.engine.loading import find_chat_template  # re-exported: files are the engine's
from glm_agent.engine.prompt import Prompt

__all__ = [
    "ChatTemplate",
    "ChatTemplateError",
    "TOOL_SYSTEM",
    "with_tool_system",
    "messages_to_dicts",
    "find_chat_template",
]


# Small models offered tools tend to call one for everything (a web search for "thanks").
# Checkpoint templates fall back to an identity line ("You are Qwen...") that says nothing about
# when not to call; this default says it. A system prompt of the caller's own is left alone.
TOOL_SYSTEM = (
    "You are a helpful assistant with tools. Call a tool only when the request needs one. "
    "Reply directly, without any tool call, to greetings, thanks and small talk, to writing "
    "tasks, and to questions you can answer from your own knowledge."
)


def with_tool_system(messages: Sequence[Message | dict], system: str = TOOL_SYSTEM) -> list[Message | dict]:
    """`messages` with `system` in front when they have no system message of their own."""
    first = messages[0] if messages else None
    role = first.get("role") if isinstance(first, dict) else getattr(first, "role", None)
    if role == "system":
        return list(messages)
    return [SystemMessage(content=system), *messages]


class ChatTemplateError(ModelError):
    """The model's chat template failed to render (it raised, or has a syntax error)."""


def messages_to_dicts(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as the dicts HF chat templates expect (OpenAI shape, arguments as dicts)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, (SystemMessage, UserMessage)):
            out.append({"role": m.role, "content": m.content})
        elif isinstance(m, AssistantMessage):
            d: dict[str, Any] = {"role": "assistant", "content": m.content}
            if m.tool_calls:
                d["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in m.tool_calls
                ]
            out.append(d)
        elif isinstance(m, ToolMessage):
            out.append(
                {"role": "tool", "tool_call_id": m.tool_call_id, "name": m.name, "content": m.content}
            )
        elif isinstance(m, dict):
            out.append(dict(m))
        else:
            raise TypeError(f"not a message: {m!r}")
    return out


def _environment(marking: bool = False):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from glm_agent.models.template_marks import MarkingEnvironment

    class GenerationTag(jinja2.ext.Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for training masks;
        # for rendering it is transparent.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(
                lineno
            )

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson HTML-escapes '<' '>' '&': templates expect plain JSON.
        return json.dumps(
            x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    env = (MarkingEnvironment if marking else ImmutableSandboxedEnvironment)(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    if marking:
        env.wrap_filters()
    return env


class ChatTemplate:
    """A compiled chat template plus the special-token strings it may reference."""

    def __init__(self, source: str, bos_token: str | None = None, eos_token: str | None = None):
        import jinja2

        self.source = source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self._marking_template: Any = None
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as exc:
            raise ChatTemplateError(
                f"the model's chat template has a syntax error (line {exc.lineno}): {exc.message}. "
                "Pass dialect=... to render with a built-in format instead."
            ) from exc

    def __len__(self) -> int:
        return len(self.source)

    @property
    def supports_tools(self) -> bool:
        return "tools" in self.source

    def render(
        self,
        messages: Sequence[Message | dict],
        tools: Sequence[ToolSpec | dict] | None = None,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        schemas = None
        if tools:
            schemas = [t.openai_schema() if isinstance(t, ToolSpec) else dict(t) for t in tools]
        return self._render(self._template, messages_to_dicts(messages), schemas, add_generation_prompt, extra)

    def render_prompt(
        self,
        messages: Sequence[Message | dict],
        tools: Sequence[ToolSpec | dict] | None = None,
        add_generation_prompt: bool = True,
        markup_tokens: Collection[str] = (),
        tool_system: str | None = TOOL_SYSTEM,
        **extra: Any,
    ) -> Prompt:
        """The rendered text plus where message content is in it (see the module docstring).

        markup_tokens: the tokenizer's special and added token strings; the fallback marks
        their occurrences inside content. Without them the fallback marks all text as content.
        tool_system: the system prompt used when tools are offered and the conversation has
        none of its own (see `with_tool_system`); None renders exactly what the template does.
        """
        from glm_agent.models.template_marks import mark_content, sanitized

        schemas = [t.openai_schema() if isinstance(t, ToolSpec) else dict(t) for t in tools or ()] or None
        if schemas and tool_system:
            messages = with_tool_system(messages, tool_system)
        dicts = sanitized(messages_to_dicts(messages))
        schemas = sanitized(schemas)
        plain = self._render(self._template, dicts, schemas, add_generation_prompt, extra)
        try:
            if self._marking_template is None:
                self._marking_template = _environment(marking=True).from_string(self.source)
            marked = self._render(
                self._marking_template, mark_content(dicts), mark_content(schemas), add_generation_prompt, extra
            )
            prompt = Prompt.parse(marked)
            if prompt.text == plain:
                return prompt
        except Exception:  # noqa: BLE001 (UnbalancedMarks, or a template that trips on Marked)
            pass  # the template did something content tracking cannot follow: fall back
        return self._render_fallback(dicts, schemas, add_generation_prompt, extra, markup_tokens)

    def _render_fallback(self, dicts, schemas, add_generation_prompt, extra, markup_tokens) -> Prompt:
        """Render with the markup-token strings inside content wrapped in marks: the template
        sees its data unchanged except where content spells a token, and whatever it does to
        that data, no token text from content can come out unmarked."""
        from glm_agent.models.template_marks import TokenMarker

        tokens = [t for t in markup_tokens if t]
        if not tokens:
            text = self._render(self._template, dicts, schemas, add_generation_prompt, extra)
            return Prompt(text, ((0, len(text)),) if text else ())
        marker = TokenMarker(tokens)
        text = self._render(self._template, marker(dicts), marker(schemas), add_generation_prompt, extra)
        return Prompt.parse(text, strict=False, reach=marker.longest)

    def _render(self, template, dicts, schemas, add_generation_prompt, extra) -> str:
        import jinja2

        try:
            return template.render(
                messages=dicts,
                tools=schemas,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template refused the conversation: {exc}") from exc
