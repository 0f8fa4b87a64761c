"""Attack: sandboxed code plants symlinks where the host will write or read its own files.

The host keeps a kernel's files (kernelspec, connection file, log, bubblewrap arguments,
matplotlib's font-list seed) in a runtime folder. Whatever of it the sandbox can write, the
host must never follow: hostile code finds every such place it can see (its command line,
its connection file, its environment, and the runtime folder's host path, which an attacker
could guess), plants links there to host files under every name the host uses, crashes the
kernel so that the host restarts it (rewriting its files), and the session is then shut
down (removing them, without following the links it finds). No host file may be created,
changed, removed or read back.
"""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.sandbox import bwrap_available
from glm_agent.tools.python import PythonTool

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

# Every name a host file of the kernel has had or has, and the sockets' names.
NAMES = ["kernel.log", "connection.json", "kernel.json", "kernel_factory/glm-agent-sandbox/kernel.json",
         "mpl/fontlist-v390.json", "fontlist-v390.json", "fontlist-v3.11.0.json", "mpl/fontlist-v3.11.0.json",
         "sandbox/bwrap-2.args", "bwrap-2.args", "k-1", "k-2", "k-3", "k-4", "k-5", "k-6", "k-7", "k-8",
         "k-9", "k-10"]


def plant_code(target: str, runtime: str, folders: tuple[str, ...] = ()) -> str:
    """Python for the kernel: plant links to `target` in every host-facing place it finds,
    and links to host `folders` for the host's cleanup to walk into."""
    return textwrap.dedent(f"""
        import json, os, sys
        argv = open('/proc/self/cmdline', 'rb').read().split(b'\\0')
        places = set([{runtime!r}])
        conn = argv[argv.index(b'-f') + 1].decode() if b'-f' in argv else None
        if conn:
            places.add(os.path.dirname(conn))
            try:
                places.add(os.path.dirname(json.load(open(conn))['ip']))
            except (OSError, ValueError, KeyError):
                pass
        for var in ('MPLCONFIGDIR', 'IPYTHONDIR'):
            if os.environ.get(var):
                places.add(os.environ[var])
                places.add(os.path.dirname(os.environ[var]))
        planted = []
        for place in sorted(places):
            for name in {NAMES!r}:
                path = os.path.join(place, name)
                try:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                    if os.path.lexists(path) and not os.path.isdir(path):
                        os.unlink(path)
                    os.symlink({target!r}, path)
                    planted.append(path)
                except OSError:
                    pass
            for i, to in enumerate({list(folders)!r}):
                for name in ('victim-%d' % i, 'deep/down/victim-%d' % i):
                    try:
                        os.makedirs(os.path.join(place, os.path.dirname(name)), exist_ok=True)
                        os.symlink(to, os.path.join(place, name))
                    except OSError:
                        pass
        print(len(planted), 'links planted in', sorted(places))
    """)


def kernel_attack(k, target: str, folders: tuple[str, ...]) -> list[str]:
    """Plant, crash, restart, use, shut down; the observations along the way."""
    seen = []
    res = k.execute_sync(plant_code(target, str(k._runtime), folders))
    assert res.status == "ok", res.text
    seen.append(res.text)
    res = k.execute_sync("import os; os._exit(1)")
    seen.append(f"{res.text}\n{res.notice}")
    res = k.execute_sync("print('after restart')", timeout=20)
    seen.append(f"{res.text}\n{res.notice}")
    assert res.text.strip() == "after restart", seen
    k.restart_sync()  # a restart asked for by the host, too
    assert k.execute_sync("print(6 * 7)").text.strip() == "42"
    k.shutdown_sync()
    return seen


@pytest.mark.parametrize("target", ["existing", "new", "etc", "home"])
def test_kernel_restart_never_follows_planted_links(target, kernel_factory, ws, targets):
    k = kernel_factory(ws)
    seen = kernel_attack(k, str(targets.all[target]), (str(targets.folder), str(targets.home_folder)))
    assert not targets.problems(), seen
    assert not any("original host content" in s for s in seen)


def test_the_runtime_folder_is_not_in_the_sandbox(kernel_factory, ws, targets):
    """Not even reachable: the host-only folder does not exist inside, by any name."""
    k = kernel_factory(ws)
    k.start_sync()
    runtime = str(k._runtime)
    res = k.execute_sync(textwrap.dedent(f"""
        import os
        found = [p for p in ({runtime!r}, {runtime + '/kernel_factory'!r}, {runtime + '/sandbox'!r}) if os.path.lexists(p)]
        try:
            os.symlink({str(targets.existing)!r}, {runtime + '/kernel.log'!r})
            found.append('planted')
        except OSError:
            pass
        print(found)
    """))
    assert res.text.strip() == "[]", res.text
    # What the kernel sees of its own files is read-only, except the socket folder.
    res = k.execute_sync(textwrap.dedent("""
        import os
        for path in ('/tmp/.kernel/connection.json', *(os.path.join('/tmp/.config/matplotlib', n)
                     for n in os.listdir('/tmp/.config/matplotlib') if n.startswith('fontlist'))):
            try:
                open(path, 'a').close()
                print('WRITABLE', path)
            except OSError:
                print('read-only', path)
    """))
    assert "WRITABLE" not in res.text and "read-only /tmp/.kernel/connection.json" in res.text


def test_python_tool_entry_point(ws, targets, config):
    """The same attack through the `python` tool as the agent calls it."""
    tool = PythonTool(sandbox=config, timeout=20, interrupt_grace=1.5)
    ctx = ToolContext(session_id="sec", workspace=ws)

    async def attack() -> list[str]:
        try:
            session = tool.session(ws)
            await session.start()
            out = []
            for code in (plant_code(str(targets.existing), str(session._runtime),
                                    (str(targets.folder), str(targets.home_folder))),
                         plant_code(str(targets.home), str(session._runtime)),
                         "import os; os._exit(3)", "print('back')"):
                out.append((await tool.call({"code": code}, ctx)).content)
            return out
        finally:
            await tool.aclose()

    seen = asyncio.run(attack())
    assert seen[-1].startswith("back"), seen
    assert not targets.problems(), seen
    assert not any("original host content" in s for s in seen)
