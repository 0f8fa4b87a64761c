"""Who may use the server: the Host check (DNS rebinding), JSON-only bodies (cross-origin form
posts), and the API key. Each is checked on every route, over real HTTP on 127.0.0.1, with
the official client where it helps and through the `glm-agent serve` command itself.
"""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_helpers import HELLO, Probe, client

from glm_agent.models.scripted import ScriptedModel

ROUTES = [("GET", "/v1/models"), ("GET", "/v1/models/scripted"), ("POST", "/v1/chat/completions"), ("GET", "/health")]
CHAT = {"messages": HELLO, "max_tokens": 4}


def call(url: str, method: str, path: str, headers: dict | None = None) -> httpx.Response:
    base = url.removesuffix("/v1")
    return httpx.request(method, base + path, json=CHAT if method == "POST" else None, headers=headers, timeout=30)


# ---------------------------------------------------------------- Host (DNS rebinding)

REBOUND_HOSTS = ["evil.example", "evil.example:8000", "127.0.0.1.nip.io", "localhost.evil.example", "attacker.localhost:80",
                 "[::2]:8000", "127.0.0.2", "0.0.0.0:8000", "", "localhost:80x", "localhost:8000@evil.example"]


@pytest.mark.parametrize("route", ROUTES, ids=[r[1] for r in ROUTES])
def test_foreign_host_names_are_refused_on_every_route(serve, server_log, route):
    model = Probe(["never"])
    url = serve(model)
    for host in REBOUND_HOSTS:
        r = call(url, *route, headers={"Host": host, "Origin": f"http://{host}"})
        assert r.status_code == 403, (host, r.status_code, r.text)
        assert r.json()["error"]["code"] == "host_not_allowed"
    assert model.calls == [], "a request under a foreign Host reached the model"
    assert not server_log.problems()


def test_loopback_host_names_pass(serve):
    url = serve(ScriptedModel(["ok"] * 6))
    port = url.split(":")[2].split("/")[0]
    for host in [f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", "localhost", "127.0.0.1"]:
        r = call(url, "POST", "/v1/chat/completions", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)


def test_server_exposed_on_purpose_takes_any_host(serve):
    url = serve(ScriptedModel(["ok"]), allowed_hosts=None)
    assert call(url, "POST", "/v1/chat/completions", headers={"Host": "gpu-box.lan:8000"}).status_code == 200


# ---------------------------------------------------------------- JSON only


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/jsonp", "", None,
])
def test_chat_takes_only_json_bodies(serve, server_log, content_type):
    """A web page may POST text/plain, form or multipart bodies to any origin without asking first."""
    model = Probe(["never"])
    url = serve(model)
    headers = {"Origin": "http://evil.example"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}'
    r = httpx.post(url + "/chat/completions", content=body, headers=headers)  # bytes: httpx adds no type
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert model.calls == []
    ok = httpx.post(url + "/chat/completions", content=body.replace(b"true", b"false"),
                    headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200
    assert not server_log.problems()


# ---------------------------------------------------------------- API key

KEY = "sk-local-7f3a9c"


@pytest.mark.parametrize("route", ROUTES, ids=[r[1] for r in ROUTES])
def test_api_key_is_required_on_every_route(serve, server_log, route):
    model = Probe(["never"])
    url = serve(model, api_key=KEY)
    wrong = [None, {"Authorization": "Bearer"}, {"Authorization": "Bearer sk-local-7f3a9"},
             {"Authorization": f"Bearer {KEY}x"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY},
             {"X-API-Key": KEY}, {"Authorization": "Bearer ключ".encode()}]
    for headers in wrong:
        r = call(url, *route, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    assert model.calls == []
    assert call(url, *route, headers={"Authorization": f"bearer  {KEY}"}).status_code in (200, 404)
    assert not server_log.problems()


def test_api_key_with_the_official_client_and_ours(serve):
    url = serve(ScriptedModel(["hello", "again"]), api_key=KEY)
    with pytest.raises(openai.AuthenticationError) as info:
        client(url, api_key="sk-wrong").chat.completions.create(model="scripted", messages=HELLO)
    assert info.value.code == "invalid_api_key"
    assert client(url, api_key=KEY).chat.completions.create(model="scripted", messages=HELLO).choices[0].message.content == "hello"

    import asyncio

    from glm_agent.core.messages import UserMessage
    from glm_agent.models.openai import OpenAIModel

    async def ask() -> str:
        model = OpenAIModel("scripted", base_url=url, api_key=KEY)
        try:
            return "".join([e.text async for e in model.stream([UserMessage(content="hi")], []) if hasattr(e, "text")])
        finally:
            await model.aclose()

    assert asyncio.run(ask()) == "again"


def test_unicode_api_key(serve):
    url = serve(ScriptedModel(["ok"]), api_key="ключ-🔑")
    assert call(url, "GET", "/v1/models", headers={"Authorization": "Bearer ключ-x".encode()}).status_code == 401
    good = httpx.get(url + "/models", headers=[(b"Authorization", "Bearer ключ-🔑".encode())])
    assert good.status_code == 200


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_serve_command_api_key_and_host_check(serve_command, slow_model_file, how):
    args = ["--model", slow_model_file("hi"), "--served-name", "scripted"]
    env = {}
    if how == "flag":
        args += ["--api-key", KEY]
    else:
        env["GLM_AGENT_API_KEY"] = KEY
    server = serve_command(args, env=env)
    assert httpx.get(server.url + "/models").status_code == 401
    assert httpx.post(server.url + "/chat/completions", json=CHAT).status_code == 401
    authorized = {"Authorization": f"Bearer {KEY}"}
    rebound = httpx.get(server.url + "/models", headers={**authorized, "Host": "evil.example"})
    assert rebound.status_code == 403
    reply = client(server.url, api_key=KEY).chat.completions.create(model="scripted", messages=HELLO)
    assert reply.choices[0].message.content == "hi"
    output = server.stop()
    assert KEY not in output and "Traceback" not in output, output


def test_request_without_host_is_refused(serve):
    import socket

    url = serve(Probe(["never"]))
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.0\r\n\r\n")
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    assert head.split()[1] == b"403", head
