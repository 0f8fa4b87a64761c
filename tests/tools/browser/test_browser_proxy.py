"""The guard proxy on its own: forwarding, CONNECT tunnels (how https travels) and refusals."""

from __future__ import annotations

import asyncio

from browser_site import exchange

from glm_agent.tools.browser.guard import BLOCK_HEADER, URLGuard
from glm_agent.tools.browser.proxy import GuardProxy


async def test_forward_tunnel_and_refusals(site):
    proxy = GuardProxy(URLGuard([site.host]))
    port = await proxy.start()
    try:
        plain = await exchange(port, f"GET {site.url('/go.html')} HTTP/1.1\r\nHost: {site.host}\r\nProxy-Connection: keep-alive\r\n\r\n".encode())
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
        refused = await exchange(port, f"CONNECT 127.0.0.1:{site.other_port} HTTP/1.1\r\n\r\n".encode())
        assert refused.startswith(b"HTTP/1.1 403") and f"{BLOCK_HEADER}: blocked".encode() in refused
        metadata = await exchange(port, b"GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        assert metadata.startswith(b"HTTP/1.1 403") and b"link-local" in metadata
        assert site.other_hits == []
        event = proxy.find_event("http://169.254.169.254/latest/meta-data/")
        assert event.kind == "blocked" and "169.254.169.254" in event.reason
    finally:
        await proxy.aclose()


async def test_local_files_are_served_from_allowed_folders_only(tmp_path):
    """Chromium never opens file:// itself: the proxy answers `http://local-files.invalid/<path>`
    from the guard's `allow_files` folders, symlinks and `..` resolved, read-only."""
    root = tmp_path / "pages"
    (root / "sub").mkdir(parents=True)
    (root / "a.html").write_text("<p>inside</p>")
    (tmp_path / "secret.txt").write_text("outside secret")
    (root / "link.html").symlink_to(tmp_path / "secret.txt")
    proxy = GuardProxy(URLGuard(allow_files=[root]), max_response_bytes=1000)
    port = await proxy.start()

    async def get(path: str, method: str = "GET") -> bytes:
        return await exchange(port, f"{method} http://local-files.invalid{path} HTTP/1.1\r\nHost: local-files.invalid\r\n\r\n".encode())

    try:
        ok = await get(f"{root}/a.html")
        assert ok.startswith(b"HTTP/1.1 200") and b"Content-Type: text/html" in ok and ok.endswith(b"<p>inside</p>")
        assert (await get(f"{root}/a.html", "HEAD")).endswith(b"\r\n\r\n")
        for path in (f"{tmp_path}/secret.txt", f"{root}/../secret.txt", f"{root}/link.html", "/etc/passwd"):
            refused = await get(path)
            assert refused.startswith(b"HTTP/1.1 403") and f"{BLOCK_HEADER}: blocked".encode() in refused, path
            assert b"outside secret" not in refused and b"root:" not in refused
        assert (await get(f"{root}/missing.html")).startswith(b"HTTP/1.1 404")
        assert (await get(f"{root}/sub")).startswith(b"HTTP/1.1 404")  # folders are not listed
        assert (await get(f"{root}/a.html", "POST")).startswith(b"HTTP/1.1 502")
        (root / "big.html").write_text("x" * 5000)
        big = await get(f"{root}/big.html")
        assert big.endswith(b"x" * 1000) and b"x" * 1001 not in big
        assert any(e.kind == "truncated" for e in proxy.events)
        tunnel = await exchange(port, b"CONNECT local-files.invalid:443 HTTP/1.1\r\n\r\n")
        assert tunnel.startswith(b"HTTP/1.1 403")
    finally:
        await proxy.aclose()
