"""The server over time: one generation at a time, clients that go away (streamed or not, while
decoding, while waiting in line, in the middle of sending their body), and shutdown (Ctrl-C)
with requests in flight. Nothing may hold the queue for a client that left, and nothing may
end in a traceback or a plain-text 500.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import threading
import time

import httpx
import pytest
from serve_helpers import HELLO, Probe, wait_pending

from glm_agent.serve import create_app, serve_in_thread

LONG = " ".join(["tok"] * 400)  # 8 s at ScriptedModel's 0.02 s a word


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


async def test_non_streamed_client_that_leaves_stops_its_generation(serve, server_log):
    probe = Probe([LONG, "after"], delay=0.02)
    url = serve(probe)
    async with httpx.AsyncClient(timeout=60) as http:
        with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
            await http.post(url + "/chat/completions", json={"messages": HELLO}, timeout=0.5)
        start = time.monotonic()
        r2 = await http.post(url + "/chat/completions", json={"messages": HELLO})
        waited = time.monotonic() - start
    assert r2.status_code == 200 and r2.json()["choices"][0]["message"]["content"] == "after"
    assert waited < 3, f"the next request waited {waited:.1f} s behind an answer nobody reads"
    assert probe.endings == ["aborted", "completed"]
    assert not server_log.problems()


async def test_queued_clients_that_leave_leave_the_line(serve, server_log):
    probe = Probe([LONG, "after"], delay=0.02)
    url = serve(probe)
    async with httpx.AsyncClient(timeout=60) as http:
        async with http.stream("POST", url + "/chat/completions", json={"messages": HELLO, "stream": True}) as running:
            lines = running.aiter_lines()  # kept: a dropped line iterator closes the response
            await lines.__anext__()  # the first request is decoding
            for stream in (False, True):  # two more wait in line, then give up
                with pytest.raises(httpx.ReadTimeout):
                    await http.post(url + "/chat/completions", json={"messages": HELLO, "stream": stream}, timeout=0.5)
            await wait_pending(http, url, 1, at_most=True)
        await wait_pending(http, url, 0, at_most=True)
        r = await http.post(url + "/chat/completions", json={"messages": HELLO})
    assert r.json()["choices"][0]["message"]["content"] == "after"
    assert len(probe.calls) == 2, "a request whose client left still reached the model"
    assert probe.endings == ["aborted", "completed"]
    assert not server_log.problems()


async def test_real_model_stops_decoding_when_the_client_leaves(smol_url):
    """SmolLM2 asked for ~1000 tokens (a minute here); the client leaves after one second."""
    async with httpx.AsyncClient(timeout=120) as http:
        long = {"model": "smol", "messages": [{"role": "user", "content": "Write a very long story."}],
                "max_tokens": 1000, "temperature": 0.8, "seed": 1}
        with pytest.raises(httpx.ReadTimeout):
            await http.post(smol_url + "/chat/completions", json=long, timeout=1)
        start = time.monotonic()
        r = await http.post(smol_url + "/chat/completions", json={"model": "smol", "messages": HELLO, "max_tokens": 4})
        waited = time.monotonic() - start
        health = (await http.get(smol_url.removesuffix("/v1") + "/health")).json()
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 4
    assert waited < 15, f"the next request waited {waited:.1f} s"
    assert health["pending"] == 0


def send_partial(url: str, head: bytes, body: bytes) -> None:
    host, port = url.removeprefix("http://").split("/")[0].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + body)
        time.sleep(0.2)  # the server is reading the body when the client goes


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_leaving_mid_body_is_no_error(serve, server_log, framing):
    url = serve(Probe(["fine"]))
    host = url.removeprefix("http://").split("/")[0]
    if framing == "content-length":
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
        body = b'{"messages": [{"role": "user", "content": "'
    else:
        head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b'10\r\n{"messages": [{"r\r\n'
    send_partial(url, head.encode(), body)
    r = httpx.post(url + "/chat/completions", json={"messages": HELLO})
    assert r.json()["choices"][0]["message"]["content"] == "fine"
    assert not server_log.problems()


def test_shutdown_answers_requests_in_flight(server_log):
    """Leaving `serve_in_thread` (what Ctrl-C does to `glm-agent serve`) with a stream decoding and
    two requests in line: each gets an OpenAI error body, promptly."""
    probe = Probe([LONG, LONG, LONG], delay=0.02)
    results: dict[str, object] = {}

    def ask(name: str, body: dict) -> None:
        try:
            with httpx.Client(timeout=30) as http, http.stream("POST", url + "/chat/completions", json=body) as r:
                results[name] = (r.status_code, r.headers.get("content-type", ""), r.read().decode())
        except httpx.HTTPError as exc:
            results[name] = exc

    with serve_in_thread(create_app(probe, "scripted")) as url:
        server_log.attach()
        threads = [threading.Thread(target=ask, args=(name, body)) for name, body in [
            ("decoding", {"messages": HELLO, "stream": True}),
            ("queued", {"messages": HELLO}),
            ("queued stream", {"messages": HELLO, "stream": True}),
        ]]
        for t in threads:
            t.start()
            time.sleep(0.3)  # in this order: one decodes, the others wait
        start = time.monotonic()
    took = time.monotonic() - start
    for t in threads:
        t.join(10)
    assert took < 3, f"shutdown took {took:.1f} s"
    for name in ("queued", "queued stream"):
        status, kind, text = results[name]
        assert (status, kind) == (503, "application/json"), results[name]
        assert json.loads(text)["error"]["code"] == "server_shutting_down"
    status, kind, text = results["decoding"]
    assert status == 200 and kind.startswith("text/event-stream")
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events)
    assert events[-1]["error"]["code"] == "server_shutting_down"
    assert probe.endings == ["aborted"] and len(probe.calls) == 1
    assert not server_log.problems()


def test_ctrl_c_during_a_request_answers_it_and_exits_cleanly(serve_command, slow_model_file):
    server = serve_command(["--model", slow_model_file(LONG, LONG)])
    results = {}

    def ask(name: str, body: dict) -> None:
        results[name] = httpx.post(server.url + "/chat/completions", json=body, timeout=30)

    threads = [threading.Thread(target=ask, args=(name, body)) for name, body in [
        ("plain", {"messages": HELLO}), ("stream", {"messages": HELLO, "stream": True})]]
    for t in threads:
        t.start()
        time.sleep(0.5)
    start = time.monotonic()
    output = server.stop(signal.SIGINT)
    took = time.monotonic() - start
    for t in threads:
        t.join(10)
    plain = results["plain"]
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "server_shutting_down", plain.text
    assert '"server_shutting_down"' in results["stream"].text
    assert server.proc.returncode == 0, output
    assert took < 5, f"Ctrl-C took {took:.1f} s"
    for sign in ("Traceback", "CancelledError", "Exception in ASGI", "Internal Server Error"):
        assert sign not in output, output
