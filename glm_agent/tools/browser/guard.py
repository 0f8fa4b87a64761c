"""URL safety for the browser: which URLs and addresses a session may reach.

By default only public internet addresses are allowed: loopback, private, link-local
(cloud metadata at 169.254.169.254), multicast and reserved ranges are blocked, and so
are `file://` and other non-web schemes. Hostnames are resolved and *every* address is
checked, so a public-looking name that points at 10.0.0.1 is blocked too. The checks run
twice: in the tool before a navigation (clear messages) and in the session's proxy for
every request the browser makes, redirect hops included (see `proxy.py`).

An explicit allow-list opens exceptions: `"127.0.0.1:8123"` (host and port),
`"http://127.0.0.1:8123/"` (same, from a URL), `"intranet.local"` (host, any port),
`"*.corp.example"` (host suffix), `"10.0.0.0/8"` (resolved addresses in a network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable
from urllib.parse import unquote, urlsplit

__all__ = ["URLGuard", "Verdict", "BLOCK_HEADER", "classify_address"]

# Header the proxy puts on the responses it makes up itself, so the tool can tell a
# refusal by the guard from a real 403/502 of the site.
BLOCK_HEADER = "x-glm-agent-blocked"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class Verdict:
    """The outcome of a check. `kind`: ok | blocked | dns | scheme | invalid."""

    allowed: bool
    kind: str = "ok"
    reason: str = ""
    addresses: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.allowed


def classify_address(ip: IPAddress) -> str | None:
    """Why an address is not public (None when it is)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address (this machine)"
    if ip.is_link_local:
        return "a link-local address (such as the cloud metadata service 169.254.169.254)"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private network address"
    if not ip.is_global:
        return "a reserved, non-public address"
    return None


def _parse_allow(entry: str) -> tuple[str, object]:
    entry = entry.strip()
    if "/" in entry and "://" not in entry:
        return "net", ipaddress.ip_network(entry, strict=False)
    if "://" in entry:
        parts = urlsplit(entry)
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        return "hostport", (host, port)
    if entry.startswith("*."):
        return "suffix", entry[1:].lower()
    if entry.startswith("[") and "]:" in entry:  # [::1]:8080
        host, _, port = entry[1:].partition("]:")
        return "hostport", (host.lower(), int(port))
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return "hostport", (host.lower(), int(port))
    return "host", entry.strip("[]").lower()


class URLGuard:
    """Decides whether a URL / host:port may be fetched.

    Args:
        allow: allow-list entries (see module doc) reachable even if they are private.
        allow_private: turn the address checks off entirely (trusted networks only).
        allow_files: folders whose files may be opened as `file://` URLs.
        resolve_timeout: seconds for one DNS lookup.
        resolver: `async (host, port) -> [addresses]` replacing the system resolver (tests,
            split-horizon setups); raise `socket.gaierror` for unknown names.
    """

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        allow_private: bool = False,
        allow_files: Iterable[str | Path] = (),
        resolve_timeout: float = 5.0,
        resolver: Callable[[str, int], Awaitable[list[str]]] | None = None,
    ):
        self.allow_private = allow_private
        self.resolver = resolver
        self.resolve_timeout = resolve_timeout
        self._hostports: set[tuple[str, int | None]] = set()
        self._hosts: set[str] = set()
        self._suffixes: list[str] = []
        self._nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.allow_files = [Path(p).resolve() for p in allow_files]
        for entry in allow:
            self.add_allow(entry)

    def add_allow(self, entry: str) -> None:
        kind, value = _parse_allow(entry)
        if kind == "net":
            self._nets.append(value)  # type: ignore[arg-type]
        elif kind == "hostport":
            self._hostports.add(value)  # type: ignore[arg-type]
        elif kind == "suffix":
            self._suffixes.append(value)  # type: ignore[arg-type]
        else:
            self._hosts.add(value)  # type: ignore[arg-type]

    def add_file_root(self, folder: str | Path) -> None:
        self.allow_files.append(Path(folder).resolve())

    def _host_allowed(self, host: str, port: int | None) -> bool:
        host = host.lower().strip("[]")
        return (
            (host, port) in self._hostports
            or host in self._hosts
            or any(host.endswith(s) for s in self._suffixes)
        )

    def check_file(self, url: str) -> Verdict:
        path = Path(unquote(urlsplit(url).path)).resolve()
        for root in self.allow_files:
            if path == root or root in path.parents:
                return Verdict(True)
        return Verdict(
            False,
            "scheme",
            "file:// URLs are blocked: the browser may not read local files. Open an http(s) URL instead.",
        )

    async def check_url(self, url: str) -> Verdict:
        """Check a whole URL (scheme, then host and resolved addresses)."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            return Verdict(False, "invalid", f"invalid URL {url!r}: {exc}")
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self.check_file(url)
        if scheme in ("about", "data", "blob"):
            return Verdict(True)
        if scheme not in _DEFAULT_PORTS:
            what = f"`{scheme}:` URLs are" if scheme else "URLs without a scheme are"
            return Verdict(False, "scheme", f"{what} not supported; use an http:// or https:// URL.")
        if not parts.hostname:
            return Verdict(False, "invalid", f"invalid URL {url!r}: it has no host name.")
        return await self.check_host(parts.hostname, port or _DEFAULT_PORTS[scheme])

    async def _resolve(self, host: str, port: int) -> list[str]:
        if self.resolver is not None:
            return list(await self.resolver(host, port))
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(info[4][0] for info in infos))

    async def check_host(self, host: str, port: int) -> Verdict:
        """Resolve `host` and check every address it resolves to."""
        host = host.strip("[]").lower()
        allowed_by_name = self._host_allowed(host, port)
        try:
            addresses = await asyncio.wait_for(self._resolve(host, port), self.resolve_timeout)
        except (socket.gaierror, UnicodeError) as exc:
            detail = getattr(exc, "strerror", None) or str(exc)
            return Verdict(False, "dns", f"could not resolve host {host!r} (DNS lookup failed: {detail}).")
        except asyncio.TimeoutError:
            return Verdict(False, "dns", f"could not resolve host {host!r} (DNS lookup timed out).")
        if not addresses:
            return Verdict(False, "dns", f"could not resolve host {host!r} (no addresses).")
        if allowed_by_name or self.allow_private:
            return Verdict(True, addresses=addresses)
        for addr in addresses:
            ip = ipaddress.ip_address(addr.split("%")[0])
            if any(ip in net for net in self._nets):
                continue
            why = classify_address(ip)
            if why:
                shown = f"{host} is" if host == addr else f"{host} resolves to {addr}, which is"
                return Verdict(False, "blocked", f"blocked for safety: {shown} {why}.", addresses)
        return Verdict(True, addresses=addresses)
