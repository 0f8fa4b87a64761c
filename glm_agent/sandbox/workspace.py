"""Workspace: the one way host-side code reads or writes files inside a session workspace.

Sandboxed code controls everything in the workspace (it is bound writable at /mnt/data),
so any name in it may be a symbolic link to a host file, a fifo that blocks a reader, or a
device node. Every access here therefore:
- walks relative names one component at a time with directory file descriptors, opening
  each with O_NOFOLLOW (a link in any component is refused, never followed);
- creates files with O_CREAT|O_EXCL|O_NOFOLLOW, so an existing name (a planted link
  included) is never opened for writing; `create_numbered` picks the next free name;
- reads only regular files: lstat first (a fifo or device is never opened), then open with
  O_NOFOLLOW|O_NONBLOCK and check that the same inode was opened; reads are size-capped;
- turns a full disk (ENOSPC, EDQUOT, EFBIG) into `WorkspaceFullError` with a clear message.

Hard links need no check: inside the sandbox, `link()` from any file outside the workspace
mount fails with EXDEV (every bind is its own mount), so a hard link in the workspace can
only point at another workspace file.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Iterable, Iterator

from glm_agent.sandbox.errors import SandboxError
from glm_agent.sandbox.quota import Quota, Usage, measure, quota_exceeded_message

__all__ = [
    "Workspace",
    "WorkspaceError",
    "UnsafePathError",
    "WorkspaceFullError",
    "read_file",
    "MAX_READ_BYTES",
]

MAX_READ_BYTES = 64 * 1024 * 1024

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class WorkspaceError(SandboxError, OSError):
    """A workspace file could not be read or written safely; the message says why."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UnsafePathError(WorkspaceError):
    """The name is a link, a fifo, a device, or leads out of the workspace."""


class WorkspaceFullError(WorkspaceError):
    """The disk (or the workspace quota) has no room for the file."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a named pipe (fifo)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device file"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _full_error(name: str, exc: OSError) -> WorkspaceFullError:
    why = "the file is larger than the file-size limit" if exc.errno == errno.EFBIG else "the disk is full"
    return WorkspaceFullError(f"could not write {name} in the workspace: {why} ({exc.strerror}). "
                              "Delete files you no longer need and try again.")


class Workspace:
    """Safe host-side access to the files under `root`.

    `root` itself is trusted (the host chose it); everything below it is not. Names are
    relative to `root` ("image-1.png", "out/plot.svg"); an absolute path inside `root` is
    accepted too. With a `quota`, new files are refused once the workspace would exceed it.
    """

    def __init__(self, root: str | os.PathLike[str], *, quota: Quota | None = None):
        self.root = Path(os.path.abspath(root))
        self.quota = quota
        self._usage: tuple[int, int] | None = None  # measured once, then kept up to date by our writes

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    # -- names -----------------------------------------------------------------------

    def relative(self, path: str | os.PathLike[str]) -> str | None:
        """`path` relative to the root if it lies inside the workspace (lexically), else None."""
        path = os.path.abspath(path)
        for root in {str(self.root), os.path.realpath(self.root)}:
            if path == root:
                return ""
            if path.startswith(root.rstrip("/") + "/"):
                return path[len(root.rstrip("/")) + 1:]
        return None

    def _parts(self, name: str | os.PathLike[str]) -> list[str]:
        text = os.fspath(name)
        if os.path.isabs(text):
            rel = self.relative(text)
            if rel is None:
                raise UnsafePathError(f"{text} is outside the workspace {self.root}")
            text = rel
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if not parts:
            raise UnsafePathError(f"{text!r} does not name a file in the workspace")
        if ".." in parts:
            raise UnsafePathError(f"{text!r} leads out of the workspace ('..' is not allowed)")
        return parts

    def path(self, name: str | os.PathLike[str]) -> Path:
        """The host path of a workspace name (for messages and attachments; do not open it)."""
        return self.root.joinpath(*self._parts(name))

    # -- directories -----------------------------------------------------------------

    def _open_root(self, create: bool) -> int:
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def _open_parent(self, parts: list[str], *, create: bool = False) -> int:
        """A file descriptor of the directory holding parts[-1]; no link is followed on the way."""
        fd = self._open_root(create)
        try:
            for i, part in enumerate(parts[:-1]):
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass  # made (or planted) meanwhile: the O_NOFOLLOW open below decides
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise self._refusal(fd, part, "/".join(parts[: i + 1]), "go through") from None
                    raise
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _refusal(self, dir_fd: int, part: str, shown: str, doing: str) -> UnsafePathError:
        try:
            st = os.stat(part, dir_fd=dir_fd, follow_symlinks=False)
            kind = _kind(st.st_mode)
        except OSError:
            kind = "not usable"
        target = ""
        if kind == "a symbolic link":
            try:
                target = f" (to {os.readlink(part, dir_fd=dir_fd)!r})"
            except OSError:
                pass
        return UnsafePathError(
            f"refusing to {doing} {shown!r} in the workspace: it is {kind}{target}. Links, pipes "
            "and devices in the workspace are never followed or opened; delete it or use another name."
        )

    # -- reading ---------------------------------------------------------------------

    def _open_regular(self, name: str | os.PathLike[str], doing: str) -> tuple[int, os.stat_result]:
        parts = self._parts(name)
        dfd = self._open_parent(parts)
        try:
            base = parts[-1]
            st = os.stat(base, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise self._refusal(dfd, base, "/".join(parts), doing)
            try:
                fd = os.open(base, _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENXIO):
                    raise self._refusal(dfd, base, "/".join(parts), doing) from None
                raise
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
                os.close(fd)
                raise UnsafePathError(f"refusing to {doing} {'/'.join(parts)!r}: it was replaced while "
                                      "being opened")
            return fd, opened
        finally:
            os.close(dfd)

    def read_bytes(self, name: str | os.PathLike[str], max_bytes: int = MAX_READ_BYTES) -> bytes:
        """The content of a regular file, at most `max_bytes` (WorkspaceError when larger)."""
        fd, st = self._open_regular(name, "read")
        try:
            if st.st_size > max_bytes:
                raise WorkspaceError(f"{name} is too large to read here ({st.st_size:,} bytes; "
                                     f"the limit is {max_bytes:,})")
            chunks, total = [], 0
            while True:
                chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                if total > max_bytes:  # it grew while we read
                    raise WorkspaceError(f"{name} is too large to read here (over {max_bytes:,} bytes)")
            return b"".join(chunks)
        finally:
            os.close(fd)

    def iter_chunks(self, name: str | os.PathLike[str], chunk_size: int = 1 << 20,
                    max_bytes: int | None = None) -> Iterator[bytes]:
        """Stream a regular file (copying out large files); stops at `max_bytes` if given."""
        fd, _ = self._open_regular(name, "read")
        try:
            total = 0
            while True:
                chunk = os.read(fd, chunk_size)
                if not chunk:
                    return
                total += len(chunk)
                if max_bytes is not None and total > max_bytes:
                    raise WorkspaceError(f"{name} is larger than {max_bytes:,} bytes")
                yield chunk
        finally:
            os.close(fd)

    def copy_out(self, name: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 overwrite: bool = False, max_bytes: int | None = None) -> Path:
        """Copy a workspace file to a host path outside the workspace (never through a link)."""
        dest = Path(dest)
        if self.relative(dest) is not None:
            raise UnsafePathError(f"{dest} is inside the workspace; copy_out writes outside it")
        chunks = self.iter_chunks(name, max_bytes=max_bytes)
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if overwrite else os.O_EXCL)
        fd = os.open(dest, flags, 0o644)
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
        except BaseException:
            os.close(fd)
            fd = -1
            dest.unlink(missing_ok=True)
            raise
        finally:
            if fd >= 0:
                os.close(fd)
        return dest

    def lstat(self, name: str | os.PathLike[str]) -> os.stat_result:
        """stat of a name without following a link at any component."""
        parts = self._parts(name)
        dfd = self._open_parent(parts)
        try:
            return os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        finally:
            os.close(dfd)

    # -- writing ---------------------------------------------------------------------

    def _check_room(self, size: int) -> None:
        quota = self.quota
        if quota is None:
            return
        if self._usage is None:
            used = measure(self.root, quota)
            self._usage = (used.bytes, used.files)
        after = Usage(self._usage[0] + size, self._usage[1] + 1)
        if quota.exceeded_by(after):
            raise WorkspaceFullError(quota_exceeded_message(
                Usage(*self._usage), quota, happened=f"A new file of {size:,} bytes was not saved."))

    def create(self, name: str | os.PathLike[str], data: bytes) -> Path:
        """Write a new file; FileExistsError if the name is taken (by anything, links included)."""
        parts = self._parts(name)
        shown = "/".join(parts)
        self._check_room(len(data))
        try:
            dfd = self._open_parent(parts, create=True)
            try:
                fd = os.open(parts[-1], _CREATE_FLAGS, 0o644, dir_fd=dfd)
                try:
                    _write_all(fd, data)
                except OSError:
                    _unlink_quiet(parts[-1], dfd)  # no half-written file is left behind
                    raise
                finally:
                    os.close(fd)
            finally:
                os.close(dfd)
        except OSError as exc:
            if exc.errno in _FULL and not isinstance(exc, WorkspaceError):
                raise _full_error(shown, exc) from None
            raise
        if self._usage is not None:
            self._usage = (self._usage[0] + len(data), self._usage[1] + 1)
        return self.root.joinpath(*parts)

    def create_new(self, names: Iterable[str], data: bytes, *, attempts: int = 1000) -> Path:
        """Write `data` under the first name of `names` that is free (taken names are skipped,
        never overwritten)."""
        last = None
        for i, name in enumerate(names):
            if i >= attempts:
                break
            last = name
            try:
                return self.create(name, data)
            except FileExistsError:
                continue
        raise WorkspaceError(f"no free file name in the workspace (last tried {last!r}); delete some files")

    def create_numbered(self, stem: str, suffix: str, data: bytes, start: int = 1) -> tuple[Path, int]:
        """Write `stem-N.suffix` with the first free N >= start; returns (path, N)."""
        for n in range(start, start + 1000):
            try:
                return self.create(f"{stem}-{n}.{suffix}", data), n
            except FileExistsError:
                continue
        # Someone filled a thousand names in a row: fall back to a random one.
        n = start + 1000
        path = self.create_new((f"{stem}-{n}-{secrets.token_hex(4)}.{suffix}" for _ in range(100)), data)
        return path, n


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unlink_quiet(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def read_file(path: str | os.PathLike[str], *, workspace: str | os.PathLike[str] | Workspace | None = None,
              max_bytes: int = MAX_READ_BYTES) -> bytes:
    """Read a file a tool pointed at (an attachment) without following links.

    Inside `workspace`, every component below the workspace root is checked; elsewhere (or
    with no workspace), the file's own folder is the trusted root and the file itself must
    be a regular file, not a link.
    """
    path = Path(os.path.abspath(path))
    if workspace is not None:
        ws = workspace if isinstance(workspace, Workspace) else Workspace(workspace)
        rel = ws.relative(path)
        if rel:
            return ws.read_bytes(rel, max_bytes)
    return Workspace(path.parent).read_bytes(path.name, max_bytes)
