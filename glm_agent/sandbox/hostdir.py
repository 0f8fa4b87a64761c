"""Host-only folders: private to the host (0700), never bound into a sandbox as a whole, and
removed without following links that sandboxed code may have planted in the parts it could
write.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

from glm_agent.sandbox.procs import pid_alive

__all__ = ["make_private_dir", "remove_tree", "sweep_stale"]

_swept: set[str] = set()


def make_private_dir(kind: str) -> Path:
    """A new folder `glm-<kind>-<pid>-XXXX` in the temp dir, mode 0700 (stale ones of dead
    processes are removed on the first call per kind)."""
    if kind not in _swept:
        _swept.add(kind)
        sweep_stale(kind)
    return Path(tempfile.mkdtemp(prefix=f"glm-{kind}-{os.getpid()}-"))


def _unlock_dir(path: str) -> None:
    """chmod 0700 a folder that sandboxed code made unreadable (it owns the files when the host
    is not root), through an O_PATH descriptor so that a symlink is never followed."""
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY)
    except OSError:
        return
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            os.chmod(f"/proc/self/fd/{fd}", 0o700)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlock_around(_function: object, failed: str, _error: object) -> None:
    _unlock_dir(os.path.dirname(failed))
    _unlock_dir(failed)


# `onerror` is deprecated from Python 3.12 on, `onexc` does not exist before.
_ON_ERROR = "onexc" if sys.version_info >= (3, 12) else "onerror"


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove `path` and all below it. shutil.rmtree's descriptor-based walk unlinks symlinks
    instead of following them; folders left unreadable are opened up and tried again."""
    path = os.fspath(path)
    for _ in range(8):
        try:
            if os.path.islink(path):
                os.unlink(path)
                return
            shutil.rmtree(path, **{_ON_ERROR: _unlock_around})
        except FileNotFoundError:
            return
        except OSError:
            pass
        if not os.path.lexists(path):
            return


def sweep_stale(kind: str) -> None:
    """Remove `glm-<kind>-<pid>-*` folders of ours whose process is gone (killed before it
    could clean up)."""
    root = tempfile.gettempdir()
    prefix = f"glm-{kind}-"
    try:
        names = [n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:
        return
    for name in names:
        owner = name[len(prefix):].split("-", 1)[0]
        entry = os.path.join(root, name)
        try:
            st = os.lstat(entry)
        except OSError:
            continue
        if (owner.isdigit() and stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
                and not pid_alive(int(owner))):
            remove_tree(entry)
