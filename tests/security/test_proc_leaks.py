"""Attack: sandboxed code reads the host's layout from /proc. The command lines and
environments of every process it can see (bubblewrap is its pid 1), and its open
descriptors, must show no host path (workspace, home, the host-only runtime folders) and
no bubblewrap arguments; /proc/self/mountinfo shows bind sources, and only the documented
ones. Through the kernel, the shell tool, and as an unprivileged user.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import textwrap

import pytest

from glm_agent.sandbox import SandboxConfig, bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

BWRAP_ARGS = ["--ro-bind", "--bind", "--setenv", "--tmpfs", "--symlink", "--remount-ro", "--unshare-"]

# Prints {pid: {cmdline, environ, fds}} of every process the code can see.
DUMP = textwrap.dedent("""
    import json, os
    seen = dict()
    for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
        entry = dict()
        for name in ('cmdline', 'environ'):
            try:
                entry[name] = open('/proc/%s/%s' % (pid, name), 'rb').read().decode(errors='replace')
            except OSError as e:
                entry[name] = 'unreadable: ' + type(e).__name__
        fds = []
        try:
            for fd in os.listdir('/proc/%s/fd' % pid):
                try:
                    fds.append(os.readlink('/proc/%s/fd/%s' % (pid, fd)))
                except OSError:
                    pass
        except OSError:
            pass
        entry['fds'] = fds
        seen[pid] = entry
    print(json.dumps(seen))
""")


def interpreter_paths() -> list[str]:
    """Paths that may show (the interpreter's own: argv[0], PATH), computed here, not by the
    code under test."""
    paths = {sys.prefix, sys.base_prefix, os.path.dirname(sys.executable), os.path.realpath(sys.executable)}
    return sorted(paths, key=len, reverse=True)


def leaks(dump: dict, forbidden: list[str]) -> list[str]:
    found = []
    for pid, entry in dump.items():
        for what in ("cmdline", "environ", "fds"):
            text = entry[what] if isinstance(entry[what], str) else "\0".join(entry[what])
            for allowed in interpreter_paths():
                text = text.replace(allowed, "<interpreter>")
            for bad in forbidden:
                if bad in text:
                    found.append(f"pid {pid} {what} shows {bad!r}: {text[:300]!r}")
    return found


def forbidden_for(workspace, *more: str) -> list[str]:
    home = os.path.expanduser("~").rstrip("/")
    return [str(workspace), f"{home}/", "/glm-k-", "/glm-s-", *more, *BWRAP_ARGS]


@pytest.mark.parametrize("entry", ["kernel", "shell"])
def test_proc_shows_no_host_paths_or_sandbox_arguments(entry, kernel_factory, ws, config, sh):
    if entry == "kernel":
        k = kernel_factory(ws)
        res = k.execute_sync(DUMP)
        assert res.status == "ok", res.text
        dump = json.loads(res.text.strip().splitlines()[-1])
        forbidden = forbidden_for(ws, str(k._runtime))
    else:
        res = sh(f"python3 -c {shlex.quote(DUMP)} & wait", ws, config)
        assert res.ok, res.output
        dump = json.loads(res.output.strip().splitlines()[-1])
        forbidden = forbidden_for(ws)
    assert "1" in dump and len(dump) <= 4, sorted(dump)  # bubblewrap is pid 1, nothing of the host
    assert not leaks(dump, forbidden)


def test_mountinfo_shows_only_the_documented_bind_sources(kernel_factory, ws):
    """What remains visible: the workspace's host path at /mnt/data, the interpreter's
    folders, and three files or folders of the kernel's host-only runtime folder (its
    socket folder, its connection file, the font-list seed); never the runtime folder as a
    whole, nor anything else of the home."""
    k = kernel_factory(ws)
    res = k.execute_sync("print(open('/proc/self/mountinfo').read())")
    assert res.status == "ok", res.text
    runtime_name = k._runtime.name
    home = os.path.expanduser("~").rstrip("/")
    from_runtime, from_home, workspace_at = {}, {}, []
    for line in res.text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        root, where = fields[3], fields[4]
        if runtime_name in root:
            from_runtime[where] = root.split(runtime_name, 1)[1]
        if root.startswith(home + "/"):
            from_home[where] = root
        if root.endswith(ws.name) and str(ws).endswith(root):
            workspace_at.append(where)
    assert workspace_at == ["/mnt/data"]
    fonts = {w: r for w, r in from_runtime.items() if w.startswith("/tmp/.config/matplotlib/")}
    assert all(r == "/mpl/" + os.path.basename(w) for w, r in fonts.items()), fonts
    rest = {w: r for w, r in from_runtime.items() if w not in fonts}
    assert set(rest) == {"/tmp/.kernel/ipc", "/tmp/.kernel/connection.json"}, from_runtime
    assert rest["/tmp/.kernel/ipc"].endswith("/ipc") and rest["/tmp/.kernel/connection.json"].endswith("/kernel.json")
    assert all(w == r and any(r == p or r.startswith(p + "/") for p in (sys.prefix, sys.base_prefix))
               for w, r in from_home.items()), from_home


def test_unprivileged_sandbox_shows_nothing_of_the_host_either(as_nobody):
    script = f"python3 -c {shlex.quote(DUMP)} & wait"
    # /root stays visible but unreadable (0700): nobody can neither read nor bind from it.
    res = as_nobody(script, SandboxConfig(timeout=10, hidden=("/home", "/run")))
    assert res.returncode == 0, res.stderr
    dump = json.loads(res.stdout.strip().splitlines()[-1])
    assert "1" in dump
    assert not leaks(dump, forbidden_for(as_nobody.workspace))
