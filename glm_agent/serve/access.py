"""Who may talk to the server: the Host check (DNS rebinding) and the API key.

A server bound to loopback is still reachable from any web page the user opens: a page on
`evil.example` whose name re-resolves to 127.0.0.1 sends requests with `Host: evil.example`.
Checking that Host names a loopback address closes that door; `application/json` (checked
where bodies are read) keeps simple cross-origin form posts out. With an API key set, every
request must carry `Authorization: Bearer KEY`; the key is compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from typing import Any, Awaitable, Callable, Collection, MutableMapping

from glm_agent.serve.errors import APIError

__all__ = ["AccessGuard", "LOOPBACK_HOSTS", "is_loopback", "host_name"]

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether binding to `host` keeps the server on this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The name in a Host header (`[::1]` keeps its brackets), lower-cased; None if it is malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        if end < 0:
            return None
        name, rest = header[: end + 1], header[end + 1 :]
    else:
        name, sep, port = header.partition(":")
        rest = sep + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value.decode("latin-1")
    return None


class AccessGuard:
    """ASGI middleware: refuse requests whose Host is not allowed (403) or that lack the key (401)."""

    def __init__(self, app: ASGIApp, *, api_key: str | None = None, allowed_hosts: Collection[str] | None = None):
        self.app = app
        self.key = api_key.encode("utf-8") if api_key else None
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_error(send, refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> APIError | None:
        if self.allowed_hosts is not None:
            host = _header(scope, b"host")
            if host is None or host_name(host) not in self.allowed_hosts:
                return APIError(
                    403,
                    f"Host {host!r} is not allowed: this server listens on loopback and answers only "
                    f"{', '.join(sorted(self.allowed_hosts))}. Connect to it by one of those names.",
                    code="host_not_allowed",
                )
        if self.key is not None:
            scheme, _, token = (_header(scope, b"authorization") or "").strip().partition(" ")
            # Compared as bytes: compare_digest refuses non-ASCII str, and headers are any bytes.
            given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
            if not hmac.compare_digest(given, self.key):
                return APIError(
                    401,
                    "Incorrect or missing API key. Send the server's key (glm-agent serve --api-key, or "
                    "GLM_AGENT_API_KEY) as 'Authorization: Bearer KEY'.",
                    code="invalid_api_key",
                    headers={"WWW-Authenticate": "Bearer"},
                )
        return None


async def _send_error(send: Callable, error: APIError) -> None:
    body = json.dumps(error.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
