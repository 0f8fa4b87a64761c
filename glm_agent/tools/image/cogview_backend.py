"""CogView text-to-image over Zhipu's API (open.bigmodel.cn), with httpx.

`POST {base_url}/images/generations` with `Authorization: Bearer <key>` and a JSON body
`{model, prompt, size}` answers `{created, data: [{url}]}` (some models may answer `b64_json`
instead). The URL points at a short-lived object store, so the image is downloaded at once
(through the same client, hence the same injectable transport, but without the API key) and
returned as a PIL image. 429 and 5xx answers and connection failures are retried with
exponential backoff (honouring Retry-After); a read timeout is not retried, because the server
may still be working and the user is already waiting.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
from typing import Any

from glm_agent.tools.image.backend import NOT_SET_UP, GeneratedImage, ImageGenerationError, ImageRequest, SizeRule

__all__ = ["CogViewBackend", "API_KEY_ENVS", "DEFAULT_BASE_URL", "DEFAULT_MODEL"]

API_KEY_ENVS = ("ZHIPUAI_API_KEY", "ZHIPU_API_KEY")
BASE_URL_ENV = "ZHIPUAI_BASE_URL"
DEFAULT_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
DEFAULT_MODEL = "cogview-3-flash"
_RETRY_STATUS = {429, 500, 502, 503, 504}
_MAX_IMAGE_BYTES = 64 * 1024 * 1024


class CogViewBackend:
    """Zhipu CogView image generation.

    Args:
        model: API model name (default "cogview-3-flash"; also cogview-3, cogview-3-plus, cogview-4 ...).
        api_key: default `$ZHIPUAI_API_KEY`, then `$ZHIPU_API_KEY`.
        base_url: default `$ZHIPUAI_BASE_URL` or https://open.bigmodel.cn/api/paas/v4.
        timeout: seconds for one HTTP request (generation itself takes ~5-30 s server side).
        max_retries: extra attempts after a 429/5xx answer or a connection failure.
        backoff: first retry delay in seconds, doubled each time (capped at 30 s).
        transport: an httpx async transport (tests pass `httpx.MockTransport`).
    """

    name = "cogview"
    # CogView-4 accepts 512..2048 px per side in steps of 16, at most 2^21 pixels.
    size_rule = SizeRule(min_side=512, max_side=2048, multiple=16, max_pixels=2**21)
    default_size = (1024, 1024)

    def __init__(
        self,
        model: str | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        transport: Any = None,
    ) -> None:
        self.model = model or DEFAULT_MODEL
        self._api_key = api_key
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff = backoff
        self.transport = transport
        self._client: Any = None

    def _key(self) -> str:
        key = self._api_key or next((os.environ[e] for e in API_KEY_ENVS if os.environ.get(e)), "")
        if not key.strip():
            raise ImageGenerationError(
                "the cogview backend needs a Zhipu API key: set ZHIPUAI_API_KEY (from "
                f"https://open.bigmodel.cn) or use the local diffusers backend with --image-model. {NOT_SET_UP}"
            )
        return key.strip()

    def problem(self) -> str | None:
        """Why this backend cannot work at all (no API key), or None."""
        try:
            self._key()
        except ImageGenerationError as exc:
            return str(exc).removesuffix(NOT_SET_UP).strip()
        return None

    def _http(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self.transport,
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)),
                follow_redirects=True,
            )
        return self._client

    async def _sleep_before_retry(self, attempt: int, response: Any = None) -> None:
        delay = min(30.0, self.backoff * (2**attempt))
        if response is not None:
            retry_after = response.headers.get("retry-after", "")
            try:
                delay = min(30.0, max(delay, float(retry_after)))
            except ValueError:
                pass
        if delay > 0:
            await asyncio.sleep(delay)

    async def _request(self, method: str, url: str, what: str, **kwargs: Any) -> Any:
        """One HTTP exchange with retries; returns the final 2xx response or raises a clear error."""
        import httpx

        client = self._http()
        last = ""
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.request(method, url, **kwargs)
            except httpx.TimeoutException as exc:
                if isinstance(exc, httpx.ConnectTimeout) and attempt < self.max_retries:
                    last = "connection timed out"
                    await self._sleep_before_retry(attempt)
                    continue
                raise ImageGenerationError(
                    f"{what} timed out after {self.timeout:g} s. The service may be busy: try again "
                    "later, or tell the user the image could not be made now."
                ) from None
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                if attempt < self.max_retries:
                    await self._sleep_before_retry(attempt)
                    continue
                raise ImageGenerationError(
                    f"{what} failed: could not reach {httpx.URL(url).host} ({last}) after "
                    f"{attempt + 1} attempts. Check the network or ZHIPUAI_BASE_URL."
                ) from None
            if response.status_code in _RETRY_STATUS and attempt < self.max_retries:
                last = f"HTTP {response.status_code}"
                await self._sleep_before_retry(attempt, response)
                continue
            if response.status_code >= 400:
                raise ImageGenerationError(self._api_error(what, response, attempt + 1))
            return response
        raise ImageGenerationError(f"{what} failed after {self.max_retries + 1} attempts ({last}).")

    @staticmethod
    def _api_error(what: str, response: Any, attempts: int) -> str:
        status = response.status_code
        code, message = "", ""
        try:
            body = response.json()
            err = body.get("error", body) if isinstance(body, dict) else {}
            if isinstance(err, dict):
                code, message = str(err.get("code", "") or ""), str(err.get("message", "") or "")
        except ValueError:
            message = response.text[:300]
        detail = f"HTTP {status}" + (f", code {code}" if code else "") + (f": {message}" if message else "")
        tried = f" after {attempts} attempts" if attempts > 1 else ""
        if status == 401:
            return f"{what} was refused ({detail}): the API key is invalid or expired; check ZHIPUAI_API_KEY."
        if status == 429:
            return f"{what} was rate limited ({detail}){tried}. Wait a minute before trying again."
        if status >= 500:
            return f"{what} failed on the server ({detail}){tried}. Try again later."
        if code == "1301" or "sensitive" in message.lower() or "contentfilter" in message.lower():
            return f"{what} was blocked by the content filter ({detail}). Rephrase the prompt."
        return f"{what} was rejected ({detail}). Fix the request (prompt, size, model) and try again."

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        key = self._key()
        width, height = request.width, request.height
        if width is None or height is None:
            width, height = self.default_size
        body: dict[str, Any] = {"model": self.model, "prompt": request.prompt, "size": f"{width}x{height}"}
        response = await self._request(
            "POST",
            f"{self.base_url}/images/generations",
            "the CogView request",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        )
        try:
            payload = response.json()
            item = payload["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ImageGenerationError(
                f"the CogView API answered without an image (body starts {response.text[:200]!r})."
            ) from None
        if item.get("b64_json"):
            raw = base64.b64decode(item["b64_json"])
        elif item.get("url"):
            # No Authorization header here: the URL is a signed object-store link on another host.
            image_response = await self._request("GET", item["url"], "downloading the CogView image")
            raw = image_response.content
        else:
            raise ImageGenerationError("the CogView API answered with neither an image URL nor image data.")
        if len(raw) > _MAX_IMAGE_BYTES:
            raise ImageGenerationError(f"the CogView image is too large ({len(raw)} bytes).")
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(raw))
            image.load()
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageGenerationError(f"the downloaded CogView image could not be decoded ({exc}).") from None
        return GeneratedImage(
            image=image,
            backend=self.name,
            model=self.model,
            extra={"url": item.get("url"), "created": payload.get("created"),
                   "revised_prompt": item.get("revised_prompt")},
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def __repr__(self) -> str:
        return f"<CogViewBackend model={self.model!r} base_url={self.base_url!r}>"
