"""The HTTP side of an OpenAI-compatible endpoint: connections, retries, streams, errors.

`EndpointClient` POSTs JSON and hands back the open response once it is 2xx, retrying 429, 5xx
and connection errors with exponential backoff (honouring `Retry-After` / `retry-after-ms`),
reads answers as chunks (server-sent events, or one JSON body), and turns what servers say
when they fail into `ModelError`s that tell the user what to check.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import re
import time
from typing import Any, AsyncIterator

import httpx

from glm_agent.core.errors import ContextOverflowError, GlmAgentError, ModelError
from glm_agent.models.openai_wire import CONTEXT_LENGTH_EXCEEDED, error_from_openai, iter_sse

__all__ = ["EndpointClient", "HTTPStatusError", "is_context_overflow", "retry_after", "RETRY_STATUS"]

# What servers say when the prompt does not fit (OpenAI, vLLM, SGLang, llama.cpp, Ollama, Zhipu).
_OVERFLOW = re.compile(
    r"context[_ ]length|maximum context|context window|too many tokens|prompt is too long|"
    r"input is too long|exceeds? (the )?(max|context|available context)|context size|reduce the length|超长|超过.*长度",
    re.I,
)
_OVERFLOW_CODES = {CONTEXT_LENGTH_EXCEEDED, "string_above_max_length", "1261"}  # 1261: Zhipu
RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504, 520, 522, 524, 529}


def is_context_overflow(status: int, message: str, code: str = "") -> bool:
    if code in _OVERFLOW_CODES:
        return True
    return status in (400, 413, 422, 500) and bool(_OVERFLOW.search(message))


def retry_after(response: httpx.Response) -> float | None:
    """Seconds to wait per `retry-after-ms` / `Retry-After` (seconds or an HTTP date)."""
    ms = response.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class HTTPStatusError(GlmAgentError):
    """A final error status (retries spent or not worth it); the caller decides what it means."""

    def __init__(self, status: int, message: str, code: str, path: str):
        super().__init__(message)
        self.status, self.message, self.code, self.path = status, message, code, path


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class EndpointClient:
    """One base URL: an httpx client per event loop, POST with retries, chunked answers."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        timeout: httpx.Timeout,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        headers: dict[str, str],
        transport: httpx.AsyncBaseTransport | None,
    ):
        self.base_url, self.api_key, self.timeout = base_url, api_key, timeout
        self.max_retries, self.backoff, self.max_backoff = max_retries, backoff, max_backoff
        self.headers, self.transport = headers, transport
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def http(self) -> httpx.AsyncClient:
        # An httpx client's pool belongs to one event loop; `run_sync` callers make a new loop each time.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop or self._client.is_closed:
            headers = {"Accept": "application/json", **self.headers}
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            self._client = httpx.AsyncClient(
                base_url=self.base_url + "/", headers=headers, timeout=self.timeout, transport=self.transport
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.aclose()
            except RuntimeError:  # its loop is gone; nothing left to release there
                pass

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST and return the open response once its status is 2xx, retrying what is worth retrying.

        Raises HTTPStatusError for a final error status, ModelError when the server cannot be reached.
        """
        client = self.http()
        attempt = 0
        while True:
            wait: float | None = None
            try:
                response = await client.send(client.build_request("POST", path, json=body), stream=True)
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if attempt >= self.max_retries:
                    raise ModelError(
                        f"Cannot reach {self.base_url}/{path} after {attempt + 1} attempts "
                        f"({type(exc).__name__}: {exc}). Is the server running, and is the base URL right?"
                    ) from exc
            else:
                if response.status_code < 400:
                    return response
                raw = await response.aread()
                await response.aclose()
                message, _, code = error_from_openai(_json_or_text(raw))
                status = response.status_code
                if status not in RETRY_STATUS or attempt >= self.max_retries or is_context_overflow(status, message, code):
                    raise HTTPStatusError(status, message, code, path)
                wait = retry_after(response)
            delay = min(self.max_backoff, self.backoff * 2**attempt) * (0.75 + random.random() / 2)
            await asyncio.sleep(min(self.max_backoff * 2, wait) if wait is not None else delay)
            attempt += 1

    async def get_json(self, path: str) -> Any:
        try:
            response = await self.http().get(path)
        except httpx.HTTPError as exc:
            raise ModelError(
                f"Cannot reach {self.base_url}/{path} ({type(exc).__name__}: {exc}). "
                "Is the server running, and is the base URL right?"
            ) from exc
        value = _json_or_text(response.content)
        if response.status_code >= 400:
            message, _, code = error_from_openai(value)
            raise HTTPStatusError(response.status_code, message, code, path)
        return value

    async def chunks(self, response: httpx.Response, path: str, stream: bool) -> AsyncIterator[dict[str, Any]]:
        """The answer's chunks: SSE events, or the one JSON body (asked for, or a server that ignored `stream`)."""
        try:
            if not stream or "json" in response.headers.get("content-type", ""):
                yield await self._whole(response)
                return
            async for payload in iter_sse(response.aiter_lines()):
                try:
                    chunk = json.loads(payload)
                except json.JSONDecodeError:
                    raise ModelError(f"{self.base_url}/{path} sent a stream chunk that is not JSON: {payload[:200]!r}") from None
                if isinstance(chunk, dict) and chunk.get("error"):
                    message, _, code = error_from_openai(chunk)
                    if is_context_overflow(400, message, code):
                        raise ContextOverflowError(f"The conversation is too long for the model. The server said: {message}")
                    raise ModelError(f"{self.base_url}/{path} failed while streaming: {message}")
                if isinstance(chunk, dict):
                    yield chunk
        except httpx.HTTPError as exc:
            raise ModelError(f"The stream from {self.base_url}/{path} broke off ({type(exc).__name__}: {exc}).") from exc
        finally:
            await response.aclose()

    async def _whole(self, response: httpx.Response) -> dict[str, Any]:
        raw = await response.aread()
        try:
            value = json.loads(raw)
        except ValueError:
            raise ModelError(f"{self.base_url} answered with something that is not JSON: {raw[:200]!r}") from None
        if not isinstance(value, dict):
            raise ModelError(f"{self.base_url} answered with JSON that is not an object: {raw[:200]!r}")
        return value
