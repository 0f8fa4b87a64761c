"""A writable copy-on-write root for one sandbox, thrown away when the sandbox ends.

bubblewrap 0.8 has no overlay support, so this file, run as a script just before bubblewrap
(`python -I rootfs.py SPEC -- bwrap ...`), builds the root itself and then execs bubblewrap:

1. a new user and mount namespace. As root the user namespace maps root to root and the
   other ids 1..65535 to 100001..165535 on the host: `useradd`, `chown`, `su` work inside
   (with the capabilities the sandbox keeps, see bwrap.py), while the host's other users'
   files show as owned by `nobody`, so that those capabilities never reach them; as any other
   user it maps that user to root, the only mapping such a user may make;
2. a size-limited tmpfs (the most the task may write to its root) holding, for each
   top-level folder of the host, an overlay whose lower layer is the host folder and whose
   upper layer lives in the tmpfs. Writes land in the tmpfs, the host is never touched, and
   everything disappears with the namespace;
3. the host files the sandbox hides (`/etc/shadow` ...) replaced in the upper layer by
   harmless stand-ins (a shadow file with locked passwords for the host's users), so that
   programs can still rewrite them;
4. for a non-root user, whose files owned by the host's root are not writable inside, the
   folders of the host down to a few levels and the small files of /etc are created in the
   upper layer owned by the sandbox's root: new files can then be made in `/usr/local/bin`,
   `/var/...`, `/etc` is editable; `useradd` still needs root (it needs more uids).

Standard library only: it runs before anything of the package is importable in the new
namespaces.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import re
import resource
import shutil
import stat
import sys

__all__ = ["launcher_path", "SKIPPED", "foreign_private_dirs"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

# Set up by bubblewrap itself (fresh /dev, /proc, a private /tmp, the host's /sys read-only).
SKIPPED = ("proc", "dev", "sys", "tmp")
# Root stays root; every other id is moved out of the host's range (see the docstring).
_ID_MAP = "0 0 1\n1 100001 65535\n"
_SKELETON_DEPTH = 3
_ETC_FILE_MAX = 1 << 20


def launcher_path() -> str:
    return os.path.abspath(__file__)


@functools.lru_cache(maxsize=1)
def foreign_private_dirs(skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Host folders that belong to another user than root and that root inside a writable-root
    sandbox may not list (those users are unmapped there, so no capability applies to their
    files). The sandbox replaces them with empty ones, so that they read as empty rather than
    failing (`find /` then succeeds, as in a container). Walked once per process."""
    found: list[str] = []
    todo = ["/" + e for e in sorted(os.listdir("/")) if e not in SKIPPED]
    while todo:
        folder = todo.pop()
        if folder in skip or os.path.islink(folder):
            continue
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            try:
                if not entry.is_dir(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            mode = st.st_mode
            if st.st_uid == 0 or mode & 0o005 == 0o005 or (st.st_gid == 0 and mode & 0o050 == 0o050):
                todo.append(entry.path)
            else:
                found.append(entry.path)
    return tuple(sorted(found))


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(libc: ctypes.CDLL, source: str | None, target: str, fstype: str | None, flags: int,
           data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {fstype or 'bind'} on {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _enter_namespaces(libc: ctypes.CDLL) -> bool:
    """New user + mount namespaces; True when root's mapping (many ids) was made."""
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"0 {uid} 1\n")
        _write("/proc/self/gid_map", f"0 {gid} 1\n")
        return False
    # A process may map only itself into its own namespace; a helper left outside writes
    # the full mapping once the namespace exists.
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_w)
        code = 1
        try:
            if os.read(ready_r, 1) == b"u":
                parent = os.getppid()
                _write(f"/proc/{parent}/uid_map", _ID_MAP)
                _write(f"/proc/{parent}/gid_map", _ID_MAP)
                code = 0
        finally:
            os._exit(code)
    os.close(ready_r)
    try:
        _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare")
        os.write(ready_w, b"u")
    finally:
        os.close(ready_w)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise OSError("could not map the user namespace's ids")
    return True


def _stand_in(path: str) -> tuple[str, int]:
    """(content, mode) replacing a hidden host file: locked passwords for shadow files."""
    name = os.path.basename(path)
    if name in ("shadow", "gshadow", "shadow-", "gshadow-"):
        source = "/etc/passwd" if name.startswith("shadow") else "/etc/group"
        try:
            with open(source) as f:
                names = [line.split(":", 1)[0] for line in f if ":" in line]
        except OSError:
            names = []
        if name.startswith("shadow"):
            return "".join(f"{n}:*:19000:0:99999:7:::\n" for n in names), 0o640
        return "".join(f"{n}:*::\n" for n in names), 0o640
    return "", 0o644


def _owners(files: list[str]) -> dict[str, tuple[int, int]]:
    """The host's numeric owners of `files`, read before the namespace hides them (inside,
    the same numbers name the same users and groups in /etc/passwd and /etc/group)."""
    owners = {}
    for path in files:
        try:
            st = os.stat(path)
            owners[path] = (st.st_uid, st.st_gid)
        except OSError:
            pass
    return owners


def _hide_files(upper: str, files: list[str], identity: bool, owners: dict[str, tuple[int, int]]) -> None:
    for path in files:
        target = os.path.join(upper, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        content, mode = _stand_in(path)
        _write(target, content)
        os.chmod(target, mode)
        if identity and path in owners:
            try:
                os.chown(target, *owners[path])
            except OSError:
                pass


def _skeleton(upper: str, top: str) -> None:
    """Host folders below /`top` (a few levels), made in the upper layer and owned by the
    sandbox's root (a non-root user's namespace cannot write folders it does not own)."""
    base = "/" + top
    for folder, dirs, files in os.walk(base):
        depth = folder[len(base):].count("/")
        rel = os.path.relpath(folder, "/")
        try:
            mode = stat.S_IMODE(os.lstat(folder).st_mode)
            os.makedirs(os.path.join(upper, rel), exist_ok=True)
            os.chmod(os.path.join(upper, rel), mode | 0o700)
        except OSError:
            dirs[:] = []
            continue
        if top == "etc" and depth == 0:
            for name in files:
                src = os.path.join(folder, name)
                dst = os.path.join(upper, rel, name)
                try:
                    st = os.lstat(src)
                    if stat.S_ISREG(st.st_mode) and st.st_size <= _ETC_FILE_MAX and not os.path.exists(dst):
                        shutil.copyfile(src, dst)
                        os.chmod(dst, stat.S_IMODE(st.st_mode) | 0o200)
                except OSError:
                    continue
        if depth + 1 >= _SKELETON_DEPTH:
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(folder, d))]


def _stack(libc: ctypes.CDLL, path: str, upper: str, work: str, merged: str, identity: bool, depth: int) -> None:
    """Make host `path` appear writable at the same place under `merged`."""
    rel = path.lstrip("/")
    dest = os.path.join(merged, rel)
    if os.path.islink(path):
        os.symlink(os.readlink(path), dest)
        return
    if os.path.isfile(path):
        _write(dest, "")
        _mount(libc, path, dest, None, MS_BIND)
        _mount(libc, None, dest, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        return
    if not os.path.isdir(path):
        return
    os.mkdir(dest, 0o755)
    up, wk = os.path.join(upper, rel), os.path.join(work, rel)
    os.makedirs(up, exist_ok=True)
    os.makedirs(wk)
    if not identity and depth == 0:
        _skeleton(upper, rel)
    try:
        _mount(libc, "overlay", dest, "overlay", 0, f"lowerdir={path},upperdir={up},workdir={wk},userxattr")
        return
    except OSError:
        pass
    if depth < 3:
        # overlayfs refuses a folder with mounts below it here (they would be uncovered): its
        # entries are stacked one by one instead, in a folder of the writable root.
        try:
            os.chmod(dest, stat.S_IMODE(os.stat(path).st_mode))
            for entry in sorted(os.listdir(path)):
                _stack(libc, os.path.join(path, entry), upper, work, merged, identity, depth + 1)
            return
        except OSError:
            pass
    _mount(libc, path, dest, None, MS_BIND | MS_REC)  # last resort: visible, read-only
    _mount(libc, None, dest, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _name_host(root: str, hostname: str) -> None:
    """The sandbox's host name in its /etc/hosts, as a container has it (`sudo` and others
    resolve their own host name and complain when they cannot)."""
    hosts = os.path.join(root, "etc", "hosts")
    try:
        with open(hosts, "a+") as f:
            f.seek(0)
            if not re.search(rf"\s{re.escape(hostname)}(\s|$)", f.read()):
                f.write(f"127.0.1.1\t{hostname}\n")
    except OSError:
        pass


def _raise_nofile() -> None:
    """As root, a container's open-file limit (scripts write to fds like 123321)."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            most = int(f.read())
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(most, 1 << 20),) * 2)
    except (OSError, ValueError):
        pass


def build(spec: dict) -> None:
    libc = _libc()
    if os.geteuid() == 0:
        _raise_nofile()
    owners = _owners(spec.get("hide_files", []))
    identity = _enter_namespaces(libc)
    # Nothing mounted here may reach the host's mount namespace.
    _mount(libc, None, "/", None, MS_REC | MS_PRIVATE)
    mnt = spec["mnt"]
    _mount(libc, "glm-root", mnt, "tmpfs", 0, f"size={int(spec['size_mb'])}m,mode=0755")
    upper, work, merged = (os.path.join(mnt, d) for d in ("upper", "work", "root"))
    for d in (upper, work, merged):
        os.mkdir(d, 0o755)
    _hide_files(upper, spec.get("hide_files", []), identity, owners)
    for entry in sorted(os.listdir("/")):
        if entry in SKIPPED:
            os.mkdir(os.path.join(merged, entry), 0o755)
        else:
            _stack(libc, "/" + entry, upper, work, merged, identity, depth=0)
    if spec.get("hostname"):
        _name_host(merged, spec["hostname"])  # through the overlay, not behind its back
    if identity:
        # Root inside keeps some capabilities: no further user namespace may give it more.
        try:
            _write("/proc/sys/user/max_user_namespaces", "0")
        except OSError:
            pass


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        sys.stderr.write("usage: rootfs.py SPEC_JSON -- COMMAND...\n")
        return 2
    try:
        build(json.loads(argv[1]))
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"glm-agent: cannot build the sandbox's writable root: {exc}\n")
        return 125
    os.execvp(argv[3], argv[3:])
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv))
