"""The cogview tool over Zhipu's image API: httpx.MockTransport and a real local HTTP server."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from glm_agent.core.contracts import ToolContext
from glm_agent.tools.image import CogViewBackend, ImageTool

API = "https://open.bigmodel.cn/api/paas/v4/images/generations"
IMAGE_URL = "https://aigc-files.bigmodel.cn/api/cogview/abc123_0.png"


def png_bytes(size=(32, 16), color=(255, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def ctx(path):
    return ToolContext(session_id="test", workspace=path)


def cogview_tool(handler, **kwargs):
    kwargs.setdefault("api_key", "test-key")
    return ImageTool(backend="cogview", transport=httpx.MockTransport(handler), backoff=0.0, **kwargs)


class Recorder:
    """A MockTransport handler implementing the API: replies from a script, records requests."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET" and str(request.url) == IMAGE_URL:
            return httpx.Response(200, content=png_bytes(), headers={"content-type": "image/png"})
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    @property
    def posts(self):
        return [r for r in self.requests if r.method == "POST"]


def ok():
    return httpx.Response(200, json={"created": 1732345678, "data": [{"url": IMAGE_URL}]})


async def test_success_request_shape_and_download(tmp_path):
    rec = Recorder(ok())
    tool = cogview_tool(rec, model="cogview-4")
    try:
        result = await tool.call({"prompt": "A red panda painting a landscape", "size": "768x1344"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    post, get = rec.requests
    assert post.method == "POST" and str(post.url) == API
    assert post.headers["authorization"] == "Bearer test-key"
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.content) == {
        "model": "cogview-4",
        "prompt": "A red panda painting a landscape",
        "size": "768x1344",
    }
    assert get.method == "GET" and str(get.url) == IMAGE_URL
    assert "authorization" not in get.headers  # the key never goes to the file host
    [attachment] = result.attachments
    with Image.open(attachment.path) as image:
        assert image.format == "PNG" and image.size == (32, 16) and image.getpixel((0, 0)) == (255, 0, 0)
    assert result.metadata == "cogview_result" and result.data["url"] == IMAGE_URL
    assert result.data["backend"] == "cogview" and result.data["model"] == "cogview-4"


async def test_default_model_size_and_env_key(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHIPU_API_KEY", "from-env")  # the second accepted variable name
    rec = Recorder(ok())
    tool = ImageTool(backend="cogview", transport=httpx.MockTransport(rec))
    try:
        result = await tool.call({"prompt": "a lighthouse"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    body = json.loads(rec.posts[0].content)
    assert body["model"] == "cogview-3-flash" and body["size"] == "1024x1024"
    assert rec.posts[0].headers["authorization"] == "Bearer from-env"


async def test_base_url_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("ZHIPUAI_BASE_URL", "https://proxy.internal.test/v4/")
    rec = Recorder(ok())
    tool = cogview_tool(rec)
    await tool.call({"prompt": "x"}, ctx(tmp_path))
    await tool.aclose()
    assert str(rec.posts[0].url) == "https://proxy.internal.test/v4/images/generations"


async def test_429_then_success_is_retried(tmp_path):
    rec = Recorder(
        httpx.Response(429, json={"error": {"code": "1302", "message": "rate limit"}}, headers={"retry-after": "0"}),
        httpx.Response(503, text="busy"),
        ok(),
    )
    tool = cogview_tool(rec)
    try:
        result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    assert len(rec.posts) == 3


async def test_retry_backoff_waits(tmp_path):
    rec = Recorder(httpx.Response(429, json={}), ok())
    backend = CogViewBackend(api_key="k", transport=httpx.MockTransport(rec), backoff=0.2)
    tool = ImageTool(backend=backend)
    started = time.perf_counter()
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert not result.is_error and time.perf_counter() - started >= 0.2


async def test_persistent_500_becomes_observation(tmp_path):
    rec = Recorder(*[httpx.Response(500, json={"error": {"code": "500", "message": "internal error"}})] * 3)
    tool = cogview_tool(rec, http_retries=2)
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and result.metadata == "cogview_result"
    assert "HTTP 500" in result.content and "internal error" in result.content
    assert "3 attempts" in result.content and "later" in result.content
    assert len(rec.posts) == 3 and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (401, {"error": {"code": "1000", "message": "身份验证失败"}}, "ZHIPUAI_API_KEY"),
        (400, {"error": {"code": "1301", "message": "系统检测到输入或生成内容可能包含不安全或敏感内容"}}, "Rephrase"),
        (400, {"error": {"code": "1214", "message": "size 参数非法"}}, "code 1214"),
    ],
)
async def test_client_errors_are_not_retried(tmp_path, status, body, expected):
    rec = Recorder(httpx.Response(status, json=body))
    tool = cogview_tool(rec)
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and expected in result.content and body["error"]["message"] in result.content
    assert len(rec.posts) == 1


async def test_read_timeout(tmp_path):
    rec = Recorder(httpx.ReadTimeout("timed out"))
    tool = cogview_tool(rec, request_timeout=5)
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and "timed out after 5 s" in result.content
    assert len(rec.posts) == 1  # the server may still be working: no duplicate request


async def test_connection_errors_retried_then_reported(tmp_path):
    rec = Recorder(*[httpx.ConnectError("Name or service not known")] * 2)
    tool = cogview_tool(rec, http_retries=1)
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and "could not reach open.bigmodel.cn" in result.content and "2 attempts" in result.content


async def test_no_api_key_sends_nothing(tmp_path):
    rec = Recorder()
    tool = ImageTool(backend="cogview", transport=httpx.MockTransport(rec))
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and "ZHIPUAI_API_KEY" in result.content
    assert rec.requests == []


async def test_b64_json_answer(tmp_path):
    data = base64.b64encode(png_bytes((16, 16), (0, 0, 255))).decode()
    rec = Recorder(httpx.Response(200, json={"created": 1, "data": [{"b64_json": data}]}))
    tool = cogview_tool(rec)
    result = await tool.call({"prompt": "blue"}, ctx(tmp_path))
    await tool.aclose()
    assert not result.is_error, result.content
    with Image.open(result.attachments[0].path) as image:
        assert image.getpixel((3, 3)) == (0, 0, 255)


@pytest.mark.parametrize(
    "reply, expected",
    [
        (httpx.Response(200, json={"created": 1, "data": []}), "without an image"),
        (httpx.Response(200, text="<html>gateway</html>"), "without an image"),
        (httpx.Response(200, json={"created": 1, "data": [{"url": "https://files.test/x.png"}]}), "could not be decoded"),
    ],
)
async def test_malformed_answers(tmp_path, reply, expected):
    def handler(request):
        if request.method == "GET":
            return httpx.Response(200, content=b"not an image")
        return reply

    tool = ImageTool(backend="cogview", api_key="k", transport=httpx.MockTransport(handler))
    result = await tool.call({"prompt": "a cat"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and expected in result.content


async def test_size_rules_checked_before_any_request(tmp_path):
    rec = Recorder()
    tool = cogview_tool(rec)
    for size, expected in (("256x256", "between 512 and 2048"), ("1000x1000", "multiple of 16"),
                           ("2048x2048", "too many pixels")):
        result = await tool.call({"prompt": "a cat", "size": size}, ctx(tmp_path))
        assert result.is_error and expected in result.content, result.content
    assert rec.requests == []
    await tool.aclose()


# -- a real HTTP server on 127.0.0.1 -----------------------------------------------------------


@pytest.fixture
def local_api():
    """A tiny stand-in for Zhipu's API: POST /api/paas/v4/images/generations, GET /files/<name>."""
    state = {"delay": 0.0, "bodies": [], "auth": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            length = int(self.headers.get("content-length", 0))
            state["bodies"].append(json.loads(self.rfile.read(length)))
            state["auth"].append(self.headers.get("authorization"))
            time.sleep(state["delay"])
            host, port = self.server.server_address
            payload = json.dumps({"created": 1, "data": [{"url": f"http://{host}:{port}/files/out.png"}]}).encode()
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def do_GET(self):
            data = png_bytes((48, 40), (0, 128, 0))
            self.send_response(200)
            self.send_header("content-type", "image/png")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = server.server_address
    state["base_url"] = f"http://{host}:{port}/api/paas/v4"
    yield state
    server.shutdown()
    server.server_close()
    thread.join(5)


async def test_local_server_end_to_end(local_api, tmp_path):
    tool = ImageTool(backend="cogview", api_key="local-key", base_url=local_api["base_url"])
    try:
        result = await tool.call({"prompt": "a green field", "size": "512x512"}, ctx(tmp_path))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    assert local_api["bodies"] == [{"model": "cogview-3-flash", "prompt": "a green field", "size": "512x512"}]
    assert local_api["auth"] == ["Bearer local-key"]
    with Image.open(result.attachments[0].path) as image:
        assert image.size == (48, 40)


async def test_local_server_timeout(local_api, tmp_path):
    local_api["delay"] = 2.0
    tool = ImageTool(backend="cogview", api_key="k", base_url=local_api["base_url"], request_timeout=0.3)
    started = time.perf_counter()
    result = await tool.call({"prompt": "slow"}, ctx(tmp_path))
    await tool.aclose()
    assert result.is_error and "timed out after 0.3 s" in result.content
    assert time.perf_counter() - started < 1.8
