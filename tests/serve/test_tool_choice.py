"""`glm-agent serve` honours `tool_choice` and `response_format` with a real local model (SmolLM2)."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                       "required": ["city", "days"]},
    },
}
PY = {"type": "function", "function": {"name": "python", "description": "Run Python code.",
                                       "parameters": {"type": "object", "properties": {"code": {"type": "string"}},
                                                      "required": ["code"]}}}
CHAT = [{"role": "user", "content": "Thanks, that's all for today!"}]


def _post(url: str, **body) -> dict:
    r = httpx.post(f"{url}/chat/completions", json={"model": "smol", "messages": CHAT, "max_tokens": 80, **body},
                   timeout=600)
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]


def _check(call: dict, tools: list[dict]) -> None:
    spec = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    fn = call["function"]
    assert fn["name"] in spec
    jsonschema.validate(json.loads(fn["arguments"]), spec[fn["name"]])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "python"}}])
def test_required_and_named_give_a_valid_call(smol_url, choice):
    tools = [WEATHER, PY]
    choice_out = _post(smol_url, tools=tools, tool_choice=choice)
    assert choice_out["finish_reason"] == "tool_calls"
    calls = choice_out["message"]["tool_calls"]
    assert calls
    _check(calls[0], tools)
    if isinstance(choice, dict):
        assert calls[0]["function"]["name"] == "python"


def test_none_answers_in_text(smol_url):
    out = _post(smol_url, tools=[WEATHER, PY], tool_choice="none", max_tokens=30)
    assert not out["message"].get("tool_calls") and out["message"]["content"]


def test_required_without_tools_is_a_400(smol_url):
    r = httpx.post(f"{smol_url}/chat/completions",
                   json={"model": "smol", "messages": CHAT, "tool_choice": "required"}, timeout=60)
    assert r.status_code == 400 and "tool_choice" in r.text


@pytest.mark.parametrize("fmt", [
    {"type": "json_schema", "json_schema": {"name": "person", "schema": {
        "type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"], "additionalProperties": False}}},
    {"type": "json_object"},
])
def test_response_format(smol_url, fmt):
    out = _post(smol_url, response_format=fmt, max_tokens=60)
    value = json.loads(out["message"]["content"])
    schema = fmt.get("json_schema", {}).get("schema", {"type": "object"})
    jsonschema.validate(value, schema)
    assert out["finish_reason"] == "stop"


def test_bad_response_format_is_a_400(smol_url):
    r = httpx.post(f"{smol_url}/chat/completions",
                   json={"model": "smol", "messages": CHAT, "response_format": {"type": "yaml"}}, timeout=60)
    assert r.status_code == 400 and "response_format" in r.text
