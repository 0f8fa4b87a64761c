"""URL safety for the browser: which URLs and addresses a session may reach.

By default only public internet addresses over http(s) are allowed: loopback, private,
link-local (cloud metadata at 169.254.169.254), multicast and reserved ranges are blocked,
in any spelling (`addresses.py`: decimal/octal/hex IPv4, IPv6 forms that carry an IPv4
address); so are `file:`, `data:`, `blob:`, `about:`, `javascript:` and every other scheme.
Hostnames are resolved and *every* address is checked, so a public-looking name that points
at 10.0.0.1 is blocked too. The checks run in the tool before a navigation (clear messages),
in the session's proxy for every request the browser makes, redirect hops included (see
`proxy.py`), and on the document a tab ends up showing (`check_document`).

An explicit allow-list opens exceptions: `"127.0.0.1:8123"` (host and port),
`"http://127.0.0.1:8123/"` (same, from a URL), `"intranet.local"` (host, any port),
`"*.corp.example"` (host suffix), `"10.0.0.0/8"` (resolved addresses in a network).
`allow_files` names folders whose files may be opened (`file://` URLs); the proxy serves
them, so Chromium itself never opens a local file (see `localfiles.py`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Awaitable, Callable, Iterable
from urllib.parse import unquote, urlsplit

from .addresses import IPAddress, canonical_host, classify_address, host_ip
from .localfiles import FILES_HOST

__all__ = ["URLGuard", "Verdict", "BLOCK_HEADER", "classify_address", "scheme_refusal"]

# Header the proxy puts on the responses it makes up itself, so the tool can tell a
# refusal by the guard from a real 403/502 of the site.
BLOCK_HEADER = "x-glm-agent-blocked"

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_PAGE_SCHEMES = ("http", "https")  # what a tab may open and show
_SCHEME_WHY = {
    "data": "a data: URL carries its own content instead of coming from a web site",
    "blob": "a blob: URL holds content a page made itself",
    "about": "about: pages are browser-internal",
    "javascript": "a javascript: URL runs script instead of opening a page",
    "filesystem": "a filesystem: URL is a page's private storage",
    "chrome": "chrome: pages are browser-internal",
    "view-source": "view-source: shows another URL's source",
    "ws": "WebSocket URLs are not pages",
    "wss": "WebSocket URLs are not pages",
}


def scheme_refusal(scheme: str) -> str:
    """Why a URL of `scheme` is not opened (the scheme is not http/https)."""
    if not scheme:
        return "URLs without a scheme are not supported; use an http:// or https:// URL."
    why = _SCHEME_WHY.get(scheme)
    return f"`{scheme}:` URLs are not supported{f' ({why})' if why else ''}; the browser opens only http:// and https:// URLs."


@dataclass
class Verdict:
    """The outcome of a check. `kind`: ok | blocked | dns | scheme | invalid."""

    allowed: bool
    kind: str = "ok"
    reason: str = ""
    addresses: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.allowed


def _parse_allow(entry: str) -> tuple[str, object]:
    entry = entry.strip()
    if "/" in entry and "://" not in entry:
        return "net", ipaddress.ip_network(entry, strict=False)
    if "://" in entry:
        parts = urlsplit(entry)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        return "hostport", (_host_key(parts.hostname or ""), port)
    if entry.startswith("*."):
        return "suffix", entry[1:].lower()
    if entry.startswith("[") and "]:" in entry:  # [::1]:8080
        host, _, port = entry[1:].partition("]:")
        return "hostport", (_host_key(host), int(port))
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return "hostport", (_host_key(host), int(port))
    return "host", _host_key(entry)


def _host_key(host: str) -> str:
    """One spelling per host for allow-list matching: `0x7f.1` and `127.0.0.1` are one host."""
    try:
        ip = host_ip(host)
    except ValueError:
        ip = None
    return str(ip) if ip is not None else canonical_host(host)


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
        return (
            (host, port) in self._hostports
            or host in self._hosts
            or any(host.endswith(s) for s in self._suffixes)
        )

    def path_allowed(self, path: Path) -> bool:
        """Is this resolved path inside one of the `allow_files` folders?"""
        return any(path == root or root in path.parents for root in self.allow_files)

    def check_file(self, url: str) -> Verdict:
        """A `file://` URL (or its path) may be opened only inside an `allow_files` folder,
        symlinks and `..` resolved first."""
        if self.path_allowed(Path(unquote(urlsplit(url).path)).resolve()):
            return Verdict(True)
        where = " outside the folders it was given (such as the local search index)" if self.allow_files else ""
        return Verdict(
            False,
            "scheme",
            f"file:// URLs are blocked: the browser may not read local files{where}. Open an http(s) URL instead.",
        )

    async def check_url(self, url: str) -> Verdict:
        """May a tab open `url`? Only http(s) (host and every resolved address checked) and
        files inside `allow_files`; every other scheme is refused."""
        try:
            parts = urlsplit(url.strip())
            port = parts.port
        except ValueError as exc:
            return Verdict(False, "invalid", f"invalid URL {url!r}: {exc}")
        scheme = parts.scheme.lower()
        if scheme == "file":
            return self.check_file(url)
        if scheme not in _PAGE_SCHEMES:
            return Verdict(False, "scheme", scheme_refusal(scheme))
        if not parts.hostname:
            return Verdict(False, "invalid", f"invalid URL {url!r}: it has no host name.")
        if canonical_host(parts.hostname) == FILES_HOST:  # a served local file: same rule as file://
            if scheme != "http":
                return Verdict(False, "invalid", f"local files are served over http:// only, not {url!r}.")
            return self.check_file(url)
        return await self.check_host(parts.hostname, port or _DEFAULT_PORTS[scheme])

    def check_document(self, url: str) -> Verdict:
        """May the document a tab ended up on reach the model? Only http(s) ones, whose every
        request went through the proxy; a page that moved itself to `data:`, `blob:`,
        `about:blank`, an error page or anything else is refused."""
        scheme = urlsplit(url).scheme.lower()
        if scheme in _PAGE_SCHEMES:
            return Verdict(True)
        if scheme == "file":  # Chromium never opens files itself (the proxy serves them)
            return Verdict(False, "scheme", "file:// URLs are blocked: web pages may not open local files.")
        return Verdict(False, "scheme", scheme_refusal(scheme))

    async def _resolve(self, host: str, port: int) -> list[str]:
        if self.resolver is not None:
            return list(await self.resolver(host, port))
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(info[4][0] for info in infos))

    async def check_host(self, host: str, port: int) -> Verdict:
        """Resolve `host` and check every address it resolves to. A host that is an IP
        address in any spelling is that address: no resolver is asked."""
        shown_host = host.strip("[]")
        try:
            literal = host_ip(host)
        except ValueError as exc:
            return Verdict(False, "invalid", f"invalid host {shown_host!r}: {exc}.")
        key = str(literal) if literal is not None else canonical_host(host)
        if key == FILES_HOST:
            return Verdict(False, "blocked", "local files are served over http:// only, not through a tunnel.")
        allowed_by_name = self._host_allowed(key, port)
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                addresses = await asyncio.wait_for(self._resolve(key, port), self.resolve_timeout)
            except (socket.gaierror, UnicodeError) as exc:
                detail = getattr(exc, "strerror", None) or str(exc)
                return Verdict(False, "dns", f"could not resolve host {shown_host!r} (DNS lookup failed: {detail}).")
            except asyncio.TimeoutError:
                return Verdict(False, "dns", f"could not resolve host {shown_host!r} (DNS lookup timed out).")
        if not addresses:
            return Verdict(False, "dns", f"could not resolve host {shown_host!r} (no addresses).")
        if allowed_by_name or self.allow_private:
            return Verdict(True, addresses=addresses)
        for addr in addresses:
            try:
                ip: IPAddress = ipaddress.ip_address(addr.split("%")[0])
            except ValueError:
                return Verdict(False, "dns", f"host {shown_host!r} resolved to {addr!r}, which is not an address.")
            if any(ip in net for net in self._nets):
                continue
            why = classify_address(ip)
            if why:
                if literal is not None:
                    shown = f"{addr} is" if shown_host.lower() == addr else f"{shown_host} ({addr}) is"
                else:
                    shown = f"{shown_host} resolves to {addr}, which is"
                return Verdict(False, "blocked", f"blocked for safety: {shown} {why}.", addresses)
        return Verdict(True, addresses=addresses)
