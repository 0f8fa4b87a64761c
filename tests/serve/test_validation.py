"""Request validation: every malformed body gets a precise 400, never a 500 or a traceback.

A table of known bad bodies (each with the parameter it must name), then fuzzing: thousands of
mutations of valid requests (values swapped for junk, keys dropped or added, lone surrogates,
deep nesting, broken bytes), read in-process and sent to a real server on 127.0.0.1.
"""

from __future__ import annotations

import copy
import json
import random

import httpx
import pytest
from serve_helpers import HELLO, TIME_TOOL, WEATHER_TOOL

from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.serve import APIError, ChatRequest, create_app, parse_chat_request, read_chat_request, serve_in_thread


class Encoder:
    """Answers "ok" after encoding what it was given as UTF-8 JSON, as a tokenizer would:
    a lone surrogate or a runaway nesting that got through would fail here."""

    name = "echo"

    def __init__(self) -> None:
        self.calls = 0

    async def stream(self, messages, tools, settings=None):
        self.calls += 1
        payload = [m.model_dump() for m in messages] + [[t.name, t.description, t.parameters] for t in tools]
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
        yield TextDelta(text="ok")
        yield ModelDone(prompt_tokens=1, completion_tokens=1)

    async def aclose(self) -> None:
        pass


@pytest.fixture(scope="module")
def echo_server():
    model = Encoder()
    with serve_in_thread(create_app(model, "echo")) as url:
        yield url, model


def nested(n: int, inner: bytes = b"1") -> bytes:
    return b"[" * n + inner + b"]" * n


def raw_body(messages: bytes, extra: bytes = b"") -> bytes:
    return b'{"messages": ' + messages + extra + b"}"


USER_HI = b'[{"role": "user", "content": "hi"}]'
ASSISTANT_CALL = {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
DEEP_SCHEMA = {"type": "object"}
for _ in range(70):
    DEEP_SCHEMA = {"type": "object", "properties": {"x": DEEP_SCHEMA}}

# (id, body, status, code, param)
BAD_REQUESTS = [
    ("invalid json", b'{"messages": [', 400, "invalid_json", None),
    ("not an object", b"[1, 2]", 400, "invalid_type", "body"),
    ("missing messages", {"model": "echo"}, 400, "missing_required_parameter", "messages"),
    ("messages not array", {"messages": "hello"}, 400, "invalid_type", "messages"),
    ("empty messages", {"messages": []}, 400, "empty_array", "messages"),
    ("message not object", {"messages": ["hi"]}, 400, "invalid_type", "messages[0]"),
    ("missing role", {"messages": [{"content": "hi"}]}, 400, "missing_required_parameter", "messages[0].role"),
    ("unknown role", {"messages": [{"role": "wizard", "content": "hi"}]}, 400, "invalid_value", "messages[0].role"),
    ("content wrong type", {"messages": [{"role": "user", "content": 42}]}, 400, "invalid_type", "messages[0].content"),
    ("image part", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     400, "invalid_value", "messages[0].content[0].type"),
    ("tool without id", {"messages": [{"role": "tool", "content": "x"}]}, 400, "missing_required_parameter", "messages[0].tool_call_id"),
    ("call arguments a number", {"messages": [{**ASSISTANT_CALL, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": 7}}]}]},
     400, "invalid_type", "messages[0].tool_calls[0].function.arguments"),
    ("call of another type", {"messages": [{**ASSISTANT_CALL, "tool_calls": [{"type": "web", "function": {"name": "f"}}]}]},
     400, "invalid_value", "messages[0].tool_calls[0].type"),
    ("call id a number", {"messages": [{**ASSISTANT_CALL, "tool_calls": [{"id": 5, "function": {"name": "f"}}]}]},
     400, "invalid_type", "messages[0].tool_calls[0].id"),
    ("legacy call without name", {"messages": [{"role": "assistant", "function_call": {"arguments": "{}"}}]},
     400, "invalid_type", "messages[0].function_call.name"),
    ("temperature string", {"messages": HELLO, "temperature": "hot"}, 400, "invalid_type", "temperature"),
    ("temperature range", {"messages": HELLO, "temperature": 7}, 400, "invalid_value", "temperature"),
    ("temperature NaN", raw_body(USER_HI, b', "temperature": NaN'), 400, "invalid_json", None),
    ("top_p Infinity", raw_body(USER_HI, b', "top_p": Infinity'), 400, "invalid_json", None),
    ("repetition_penalty zero", {"messages": HELLO, "repetition_penalty": 0}, 400, "invalid_value", "repetition_penalty"),
    ("seed beyond 64 bits", {"messages": HELLO, "seed": 2**64}, 400, "invalid_value", "seed"),
    ("integer of 5000 digits", raw_body(USER_HI, b', "seed": ' + b"9" * 5000), 400, "invalid_json", None),
    ("max_tokens zero", {"messages": HELLO, "max_tokens": 0}, 400, "integer_below_min_value", "max_tokens"),
    ("max_tokens float", {"messages": HELLO, "max_tokens": 1.5}, 400, "invalid_type", "max_tokens"),
    ("stop with a number", {"messages": HELLO, "stop": ["a", 1]}, 400, "invalid_type", "stop[1]"),
    ("stream not bool", {"messages": HELLO, "stream": "yes"}, 400, "invalid_type", "stream"),
    ("tools not array", {"messages": HELLO, "tools": {"a": 1}}, 400, "invalid_type", "tools"),
    ("tool without name", {"messages": HELLO, "tools": [{"type": "function", "function": {}}]}, 400, "invalid_type", "tools[0].function.name"),
    ("tool of another type", {"messages": HELLO, "tools": [{"type": "retrieval"}]}, 400, "invalid_value", "tools[0].type"),
    ("unknown tool_choice", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     400, "invalid_value", "tool_choice.function.name"),
    ("tool_choice function as a string", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": "get_weather"}},
     400, "invalid_type", "tool_choice.function"),
    ("tool_choice without function", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function"}},
     400, "missing_required_parameter", "tool_choice.function"),
    ("tool_choice of another type", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools"}},
     400, "invalid_value", "tool_choice.type"),
    ("tool_choice unknown word", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": "always"}, 400, "invalid_value", "tool_choice"),
    ("tool_choice a number", {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": 1}, 400, "invalid_type", "tool_choice"),
    ("legacy function_call unknown", {"messages": HELLO, "functions": [WEATHER_TOOL["function"]], "function_call": {"name": "nope"}},
     400, "invalid_value", "function_call.name"),
    ("legacy function_call a number", {"messages": HELLO, "functions": [WEATHER_TOOL["function"]], "function_call": 3},
     400, "invalid_type", "function_call"),
    ("legacy functions not array", {"messages": HELLO, "functions": {"name": "f"}}, 400, "invalid_type", "functions"),
    ("tools and functions", {"messages": HELLO, "tools": [WEATHER_TOOL], "functions": [TIME_TOOL["function"]]}, 400, "invalid_value", "functions"),
    ("function_call without functions", {"messages": HELLO, "function_call": {"name": "f"}}, 400, "invalid_value", "function_call"),
    ("n > 1", {"messages": HELLO, "n": 3}, 400, "invalid_value", "n"),
    ("lone surrogate in content", raw_body(b'[{"role": "user", "content": "a\\ud800b"}]'), 400, "invalid_value", "messages[0].content"),
    ("lone low surrogate in a text part", raw_body(b'[{"role": "user", "content": [{"type": "text", "text": "\\udfff"}]}]'),
     400, "invalid_value", "messages[0].content[0].text"),
    ("lone surrogate in a tool schema", raw_body(USER_HI, b', "tools": [{"type": "function", "function": {"name": "f", "parameters": '
                                                 b'{"type": "object", "properties": {"x": {"description": "\\ud83d"}}}}}]'),
     400, "invalid_value", "tools[0].function.parameters.properties.x.description"),
    ("lone surrogate in a key", raw_body(USER_HI, b', "tools": [{"type": "function", "function": {"name": "f", "parameters": {"\\ud800": 1}}}]'),
     400, "invalid_value", "tools[0].function.parameters"),
    ("lone surrogate in call arguments", raw_body(b'[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", '
                                                  b'"arguments": "{\\"a\\": \\"\\ud800\\"}"}}]}]'),
     400, "invalid_value", "messages[0].tool_calls[0].function.arguments"),
    ("surrogate in raw UTF-8 bytes", raw_body(b'[{"role": "user", "content": "\xed\xa0\x80"}]'), 400, "invalid_json", None),
    ("bytes that are not UTF-8", raw_body(b'[{"role": "user", "content": "\xff\xfe"}]'), 400, "invalid_json", None),
    ("nested 100,000 deep", raw_body(nested(100_000)), 400, "invalid_json", None),
    ("objects nested 100,000 deep", b'{"a": ' * 100_000 + b"1" + b"}" * 100_000, 400, "invalid_json", None),
    ("nested 500 deep", raw_body(nested(500)), 400, "invalid_value", "messages" + "[0]" * 63),
    ("tool schema 70 deep", {"messages": HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": DEEP_SCHEMA}}]},
     400, "invalid_value", "tools[0].function.parameters" + ".properties.x" * 30),
    ("surrogate inside call arguments text", raw_body(b'[{"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", '
                                                      b'"arguments": "{\\"a\\": [\\"\\\\ud800\\"]}"}}]}]'),
     400, "invalid_value", "messages[0].tool_calls[0].function.arguments.a[0]"),
    ("call arguments text nested 500 deep", {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": '{"a": ' + "[" * 500 + "]" * 500 + "}"}}]}]},
     400, "invalid_value", "messages[0].tool_calls[0].function.arguments.a" + "[0]" * 63),
    ("unknown model", {"model": "gpt-9", "messages": HELLO}, 404, "model_not_found", "model"),
]


def encode(body) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize("case", BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS])
def test_bad_request_gets_a_precise_openai_error_and_server_keeps_serving(echo_server, server_log, case):
    _, body, status, code, param = case
    url, model = echo_server
    calls = model.calls
    r = httpx.post(url + "/chat/completions", content=encode(body), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == "invalid_request_error" and len(error["message"]) > 10
    assert error["param"] == param, error
    assert model.calls == calls, "the bad request reached the model"
    good = httpx.post(url + "/chat/completions", json={"model": "echo", "messages": HELLO}, timeout=30)
    assert good.status_code == 200 and good.json()["choices"][0]["message"]["content"] == "ok"
    assert not server_log.problems()


def test_parse_chat_request_settings():
    req = parse_chat_request({
        "messages": HELLO, "max_completion_tokens": 7, "temperature": 0.5, "top_p": 0.9, "seed": 3,
        "stop": "END", "stream": True, "stream_options": {"include_usage": True}, "top_k": 20,
    })
    s = req.settings
    assert (s.max_new_tokens, s.temperature, s.top_p, s.seed, s.stop, s.top_k) == (7, 0.5, 0.9, 3, ["END"], 20)
    assert req.stream and req.include_usage and req.model is None and not req.legacy
    # OpenAI's ranges, mapped onto what the engine takes: top_p 0 keeps the top token, top_k -1 is off.
    edge = parse_chat_request({"messages": HELLO, "top_p": 0, "top_k": -1, "seed": 2**64 - 1, "repetition_penalty": 10})
    assert 0 < edge.settings.top_p <= 1e-6 and edge.settings.top_k == 0 and edge.settings.seed == 2**64 - 1


# ---------------------------------------------------------------- fuzzing

SEED_BODIES = [
    {
        "model": "echo",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "weather "}, {"type": "text", "text": "in Beijing?"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Beijing\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp\": 22}"},
        ],
        "tools": [WEATHER_TOOL, TIME_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 16, "stop": ["x"], "seed": 1,
        "stream": False, "stream_options": {"include_usage": True},
    },
    {
        "messages": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "function_call": {"name": "get_weather", "arguments": "{}"}},
            {"role": "function", "name": "get_weather", "content": "sunny"},
        ],
        "functions": [WEATHER_TOOL["function"]],
        "function_call": {"name": "get_weather"},
        "max_completion_tokens": 8, "n": 1, "top_k": 5, "repetition_penalty": 1.1,
    },
    {"messages": HELLO, "tools": [WEATHER_TOOL], "tool_choice": "auto", "stream": True},
]
KEYS = ["model", "messages", "role", "content", "tools", "tool_choice", "function", "functions", "function_call", "name",
        "arguments", "tool_calls", "tool_call_id", "type", "parameters", "stream", "stream_options", "n", "logprobs",
        "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop", "text", "id"]


def junk(rng: random.Random, depth: int = 0):
    simple = [None, True, False, 0, -1, 1, 2, 2**63, 2**70, -(2**70), 0.5, -0.0, 1e308, 3.7, "", "x", "none", "auto",
              "required", "function", "text", "user", "tool", "assistant", "get_weather", "{", "{\"a\": 1}",
              "\ud800", "a\udfffb", "\ud83d\ude00", "\x00", "<|im_end|>", [], {}]
    if depth > 2 or rng.random() < 0.6:
        return copy.deepcopy(rng.choice(simple))
    if rng.random() < 0.5:
        return [junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(KEYS): junk(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def nodes(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from nodes(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from nodes(item, (*path, i))


def mutate(body: dict, rng: random.Random):
    body = copy.deepcopy(body)
    for _ in range(rng.randint(1, 3)):
        path, value = rng.choice(list(nodes(body)))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        op = rng.random()
        if not path:
            if op < 0.1:
                return junk(rng)
            body[rng.choice(KEYS)] = junk(rng)
        elif op < 0.45:
            parent[path[-1]] = junk(rng)
        elif op < 0.6:
            del parent[path[-1]]
        elif op < 0.7 and isinstance(value, dict):
            value[rng.choice(KEYS)] = junk(rng)
        elif op < 0.8:
            parent[path[-1]] = [value]
        elif op < 0.9:
            deep = value
            for _ in range(rng.choice([2, 30, 70, 200])):
                deep = [deep]
            parent[path[-1]] = deep
        else:
            parent[path[-1]] = {"type": "function", "function": value}
    return body


def to_bytes(body, rng: random.Random) -> bytes:
    if rng.random() < 0.2:  # lone surrogates written raw: invalid UTF-8 on the wire
        raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    else:
        raw = json.dumps(body, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    if rng.random() < 0.15:  # broken bytes
        at = rng.randrange(len(raw) + 1)
        piece = rng.choice([b"", b"{", b"[", b"]", b'"', b"\\", b"\\u", b"\\ud800", b"\xff", b"\x00", b"NaN", b"1e999", b"[" * 5000])
        raw = raw[:at] + piece + raw[at + rng.randint(0, 3):]
    return raw


def fuzzed(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [to_bytes(mutate(rng.choice(SEED_BODIES), rng), rng) for _ in range(n)]


def test_fuzzed_bodies_parse_or_get_a_400(monkeypatch):
    accepted = 0
    for raw in fuzzed(4000, seed=7):
        try:
            req = read_chat_request(raw)
        except APIError as exc:
            assert exc.status == 400 and exc.message and exc.code, (raw[:300], exc)
            continue
        except Exception as exc:  # noqa: BLE001 - the point: nothing else may escape
            pytest.fail(f"{type(exc).__name__}: {exc} for body {raw[:300]!r}")
        assert isinstance(req, ChatRequest)
        accepted += 1
        # What the model gets is text it can encode, nested no deeper than the limit.
        payload = [m.model_dump() for m in req.messages] + [t.parameters for t in req.tools]
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    assert 100 < accepted < 3900, accepted  # the mutations reach both sides


def test_fuzzed_bodies_over_http_never_500_or_traceback(echo_server, server_log):
    url, _ = echo_server
    statuses = set()
    with httpx.Client(timeout=30) as http:
        for raw in fuzzed(200, seed=11):
            r = http.post(url + "/chat/completions", content=raw, headers={"content-type": "application/json"})
            statuses.add(r.status_code)
            assert r.status_code in (200, 400, 404), (r.status_code, r.text[:300], raw[:300])
            if r.status_code != 200 or not r.headers["content-type"].startswith("text/event-stream"):
                assert "error" in r.json() or r.json()["choices"]
    assert {200, 400} <= statuses
    assert not server_log.problems()
