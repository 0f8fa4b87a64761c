"""Helpers of the server tests: a model that records how its generations ended, a watch on the
server's logs, the `glm-agent serve` command on a free loopback port, the official client."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

from glm_agent.models.scripted import ScriptedModel

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
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
REPO = Path(__file__).resolve().parents[2]

def smollm2_available() -> bool:
    from glm_agent.engine.embedded import EmbeddedModelError, smollm2_path

    try:
        return smollm2_path().is_file()
    except EmbeddedModelError:
        return False


def client(url: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=api_key, max_retries=0, timeout=120)


class LogWatch(logging.Handler):
    """Records what the server logs where tracebacks surface (uvicorn's "Exception in ASGI
    application", our own errors, asyncio's unretrieved task exceptions)."""

    NAMES = ("uvicorn.error", "glm_agent", "asyncio")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def attach(self) -> None:
        # Again after each server start: uvicorn's logging config replaces its loggers' handlers.
        for name in self.NAMES:
            if self not in logging.getLogger(name).handlers:
                logging.getLogger(name).addHandler(self)

    def detach(self) -> None:
        for name in self.NAMES:
            logging.getLogger(name).removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def problems(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}" + (f" ({r.exc_info[0].__name__})" if r.exc_info else "")
            for r in self.records
            if r.exc_info or r.levelno >= logging.ERROR
        ]


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


async def wait_pending(http: httpx.AsyncClient, url: str, n: int, *, at_most: bool = False, headers=None) -> None:
    """Until at least (or, `at_most`, at most) `n` requests are in line or running (no fixed sleeps)."""
    for _ in range(1000):
        pending = (await http.get(url.removesuffix("/v1") + "/health", headers=headers)).json()["pending"]
        if (pending <= n) if at_most else (pending >= n):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never saw {'at most' if at_most else 'at least'} {n} pending requests")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeCommand:
    """`python -m glm_agent.cli.serve` in a subprocess on a free loopback port, output captured."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, ready_headers: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glm_agent.cli.serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(self.url + "/models", headers=ready_headers, timeout=2).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited: {self.proc.stdout.read()}")
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.1)

    def stop(self, sig: int | None = None, timeout: float = 30) -> str:
        """Signal it (SIGINT, as Ctrl-C does), wait, and return everything it printed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return self.proc.stdout.read()
