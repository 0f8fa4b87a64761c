"""Local files (the folder of a local search index) without Chromium ever opening `file://`.

A tab showing a `file://` document may open any other local file (`<meta refresh>`,
`location=`, frames), and Chromium's request interception cannot be relied on for every
path. So Chromium is never given a `file://` URL: `file:///docs/a.html` is loaded as
`http://local-files.invalid/docs/a.html`, which the session's proxy answers itself from
the allowed folders only (`.invalid` never resolves, so the name cannot be anyone's site).
Pages from the folder are then ordinary http pages, which Chromium does not let open local
files, and their relative links still work. The model keeps seeing `file://` URLs.
"""

from __future__ import annotations

import mimetypes
import os
import stat
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = ["FILES_HOST", "to_served", "from_served", "is_served", "read_local_file"]

FILES_HOST = "local-files.invalid"


def to_served(file_url: str) -> str:
    """`file:///a/b.html#x` -> `http://local-files.invalid/a/b.html#x` (path kept as written)."""
    parts = urlsplit(file_url)
    return urlunsplit(("http", FILES_HOST, parts.path or "/", parts.query, parts.fragment))


def is_served(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and (parts.hostname or "").lower() == FILES_HOST


def from_served(url: str) -> str:
    """The `file://` URL a served URL stands for; any other URL unchanged."""
    if not is_served(url):
        return url
    parts = urlsplit(url)
    return urlunsplit(("file", "", parts.path or "/", parts.query, parts.fragment))


def read_local_file(url: str, allowed: Callable[[Path], bool], cap: int) -> tuple[bytes, str, bool]:
    """(content, content type, cut at `cap`) of the file a `file://` or served URL names.

    The file is opened without following a last symlink and checked again by the path the
    kernel opened, so a symlink swapped in after the check cannot lead outside the folder.
    Raises FileNotFoundError / IsADirectoryError / PermissionError with a short message."""
    path = Path(unquote(urlsplit(url).path)).resolve()
    if not allowed(path):
        raise PermissionError("outside the allowed folders")
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError("no such file") from None
    except OSError as exc:
        raise PermissionError(exc.strerror or "cannot be opened") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError("not a regular file")
        proc = f"/proc/self/fd/{fd}"
        real = Path(os.readlink(proc)) if os.path.exists(proc) else path
        if not allowed(real):
            raise PermissionError("outside the allowed folders")
        chunks: list[bytes] = []
        total = 0
        while total <= cap:
            chunk = os.read(fd, min(1 << 20, cap + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return data[:cap], ctype, len(data) > cap
