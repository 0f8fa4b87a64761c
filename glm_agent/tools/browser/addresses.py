"""IP addresses as the browser guard sees them: host spellings and whether an address is public.

Two things decide whether the browser may reach a host, and both live here so every check
(the tool's check before a navigation, the proxy's check of every request) uses the same:

- `host_ip(host)`: the IP address a URL host *is*, spelled any way Chromium accepts:
  `2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, `127.0.0.1.`, full-width digits,
  `[::ffff:127.0.0.1]`. Chromium rewrites these to `127.0.0.1` before a request leaves it,
  so the guard must read them the same way instead of handing them to a resolver.
- `classify_address(ip)`: why an address is not public, or None. IPv6 forms that carry an
  IPv4 address are judged by that IPv4 address: IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated
  `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`,
  Teredo `2001::/32` (client address stored inverted) and ISATAP interface ids
  (`...:0:5efe:a.b.c.d`). Site-local `fec0::/10` and NAT64 local-use `64:ff9b:1::/48` are
  private. The tables are written out so the answer does not change with the Python version.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from urllib.parse import unquote

__all__ = ["IPAddress", "host_ip", "canonical_host", "embedded_ipv4", "classify_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NET = ipaddress.ip_network
_NAT64 = _NET("64:ff9b::/96")
_NAT64_LOCAL = _NET("64:ff9b:1::/48")
_MAPPED = _NET("::ffff:0:0/96")
_TRANSLATED = _NET("::ffff:0:0:0/96")
_COMPATIBLE = _NET("::/96")
_SIX_TO_FOUR = _NET("2002::/16")
_TEREDO = _NET("2001::/32")

# (network, reason), first match wins. IPv4 first, then IPv6.
_V4_TABLE = [
    (_NET("127.0.0.0/8"), "a loopback address (this machine)"),
    (_NET("0.0.0.0/32"), "the unspecified address (it reaches this machine)"),
    (_NET("0.0.0.0/8"), "a 'this network' address (it reaches this machine)"),
    (_NET("169.254.0.0/16"), "a link-local address (such as the cloud metadata service 169.254.169.254)"),
    (_NET("10.0.0.0/8"), "a private network address"),
    (_NET("172.16.0.0/12"), "a private network address"),
    (_NET("192.168.0.0/16"), "a private network address"),
    (_NET("100.64.0.0/10"), "a shared (carrier-grade NAT), non-public address"),
    (_NET("224.0.0.0/4"), "a multicast address"),
    (_NET("192.0.0.0/24"), "a reserved, non-public address"),
    (_NET("192.0.2.0/24"), "a reserved, non-public address (documentation)"),
    (_NET("198.18.0.0/15"), "a reserved, non-public address (benchmarking)"),
    (_NET("198.51.100.0/24"), "a reserved, non-public address (documentation)"),
    (_NET("203.0.113.0/24"), "a reserved, non-public address (documentation)"),
    (_NET("240.0.0.0/4"), "a reserved, non-public address"),
]
_V6_TABLE = [
    (_NET("::1/128"), "a loopback address (this machine)"),
    (_NET("::/128"), "the unspecified address (it reaches this machine)"),
    (_NET("fe80::/10"), "a link-local address"),
    (_NET("fec0::/10"), "a site-local address (a private network)"),
    (_NET("fc00::/7"), "a private network address (unique local)"),
    (_NAT64_LOCAL, "a local-use NAT64 address (a private network)"),
    (_NET("ff00::/8"), "a multicast address"),
    (_TEREDO, "a Teredo tunnel address"),
    (_NET("2001:db8::/32"), "a reserved, non-public address (documentation)"),
    (_NET("100::/64"), "a reserved, non-public address (discard-only)"),
]

_V4_MAIN = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})  # dots IDNA maps to "."


def canonical_host(host: str) -> str:
    """A URL host the way Chromium reads it: percent-decoded, NFKC (IDNA) mapped, lower-case,
    without brackets or one trailing dot."""
    host = unicodedata.normalize("NFKC", unquote(host.strip())).translate(_DOTS).lower()
    host = host.strip("[]")
    return host[:-1] if host.endswith(".") and not host.endswith("..") else host


def _ipv4_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8)
    return int(part)


def _parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """WHATWG URL IPv4 parsing: 1-4 parts, each decimal, octal (leading 0) or hex (0x).
    None when the host is a name; ValueError when it ends in a number but is no address
    (Chromium refuses such URLs)."""
    parts = host.split(".")
    if not _V4_MAIN.match(parts[-1]):
        return None  # a name, not a number
    if len(parts) > 4 or any(not _V4_MAIN.match(p) for p in parts):
        raise ValueError(f"{host!r} is not a valid IPv4 address")
    try:
        numbers = [_ipv4_number(p) for p in parts]
    except ValueError:
        raise ValueError(f"{host!r} is not a valid IPv4 address") from None
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{host!r} is not a valid IPv4 address (a part is too large)")
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def host_ip(host: str) -> IPAddress | None:
    """The IP address `host` spells (any spelling Chromium accepts), or None for a name.

    Raises ValueError for a host that looks like an address but is not one."""
    host = canonical_host(host)
    if ":" in host:
        return ipaddress.IPv6Address(host.split("%")[0])
    return _parse_ipv4(host) if host else None


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (and reaches through), if it has one."""
    low = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64:
        return low
    if ip in _COMPATIBLE:
        return low if int(ip) > 1 else None  # :: and ::1 are themselves
    if ip in _SIX_TO_FOUR:
        return ip.sixtofour
    if ip in _TEREDO:
        return ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)  # the client address, inverted
    if (int(ip) >> 32) & 0xFDFFFFFF == 0x5EFE:  # ISATAP interface id 0:5efe / 200:5efe
        return low
    return None


def _lookup(ip: IPAddress, table) -> str | None:
    return next((why for net, why in table if ip in net), None)


def classify_address(ip: IPAddress) -> str | None:
    """Why an address is not public (None when it is)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return _lookup(ip, _V4_TABLE) or (None if ip.is_global else "a reserved, non-public address")
    v4 = embedded_ipv4(ip)
    if v4 is not None:
        why = _lookup(v4, _V4_TABLE) or (None if v4.is_global else "a reserved, non-public address")
        if why:
            return f"{why}; it is an IPv6 form of {v4}"
        if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64 or ip in _SIX_TO_FOUR:
            return None  # these reach the (public) IPv4 address itself
        if ip in _COMPATIBLE:
            return f"a deprecated IPv4-compatible address (an IPv6 form of {v4})"
    why = _lookup(ip, _V6_TABLE)
    if why:
        return why
    if ip.is_multicast or ip.is_link_local or ip.is_site_local or ip.is_private or not ip.is_global:
        return "a reserved, non-public address"
    return None
