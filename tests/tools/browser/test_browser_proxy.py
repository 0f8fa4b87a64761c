"""The guard proxy on its own: forwarding, CONNECT tunnels (how https travels) and refusals."""

from __future__ import annotations

import asyncio

from glm_agent.tools.browser.guard import BLOCK_HEADER, URLGuard
from glm_agent.tools.browser.proxy import GuardProxy


async def _exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return out


async def test_forward_tunnel_and_refusals(site):
    proxy = GuardProxy(URLGuard([site.host]))
    port = await proxy.start()
    try:
        plain = await _exchange(port, f"GET {site.url('/go.html')} HTTP/1.1\r\nHost: {site.host}\r\nProxy-Connection: keep-alive\r\n\r\n".encode())
        head, _, body = plain.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
        assert b"content-length" not in head.lower()  # body ends with the connection (see _forward)
        assert b"Go 1.0 was released" in body

        # CONNECT opens a tunnel after the check; here plain HTTP runs through it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(f"CONNECT {site.host} HTTP/1.1\r\nHost: {site.host}\r\n\r\n".encode())
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 Connection Established")
        writer.write(f"GET /rust.html HTTP/1.1\r\nHost: {site.host}\r\nConnection: close\r\n\r\n".encode())
        tunnelled = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert b"Rust 1.0 was released" in tunnelled

        site.other_hits.clear()
        refused = await _exchange(port, f"CONNECT 127.0.0.1:{site.other_port} HTTP/1.1\r\n\r\n".encode())
        assert refused.startswith(b"HTTP/1.1 403") and f"{BLOCK_HEADER}: blocked".encode() in refused
        metadata = await _exchange(port, b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        assert metadata.startswith(b"HTTP/1.1 403") and b"link-local" in metadata
        assert site.other_hits == []
        event = proxy.find_event("http://169.254.169.254/latest/meta-data/")
        assert event.kind == "blocked" and "169.254.169.254" in event.reason
    finally:
        await proxy.aclose()
