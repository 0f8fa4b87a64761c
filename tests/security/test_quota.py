"""Workspace quota: sandboxed code cannot fill the host disk through the workspace.

Filled by many small files and by one big file, from the python tool (in a cell, and from a
background thread or process between cells) and from the shell tool (a loop, `dd`, parallel
writers). Each time the code is stopped, the model is told in plain words what is used, the
limit and what to do, and the workspace works again once files are deleted. Small limits
(20 MiB, 300 files) keep every test quick.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from glm_agent.core.contracts import ToolContext
from glm_agent.sandbox import SandboxConfig, bwrap_available
from glm_agent.sandbox.quota import HELD_LEVELS, Quota, QuotaWatcher, Usage, measure

sys.path.insert(0, str(Path(__file__).parent))
from _workspace_helpers import png_bytes  # noqa: E402

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
MiB = 1024 * 1024
QUOTA_MB, MAX_FILES = 20, 300
CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=30, workspace_quota_mb=QUOTA_MB, workspace_max_files=MAX_FILES)
HEADLINE = "The workspace quota is exceeded: /mnt/data holds "


def ctx(ws: Path) -> ToolContext:
    return ToolContext(session_id="quota", workspace=ws)


def du(ws: Path) -> Usage:
    return measure(ws)


@pytest.fixture
def tool_config() -> SandboxConfig:
    return CFG


# -- measuring ---------------------------------------------------------------------------------


def test_measure_counts_what_the_disk_holds_and_never_follows_links(tmp_path):
    root = tmp_path / "ws"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "data").write_bytes(b"x" * MiB)
    os.link(root / "a" / "b" / "data", root / "hardlink")  # the same blocks: counted once
    os.symlink("/usr", root / "usr")  # a link to a huge host tree: one entry, no blocks
    with open(root / "sparse", "wb") as f:  # 1 GiB long, nothing written: what du counts
        f.truncate(1 << 30)
    usage = measure(root)
    assert usage.complete and not usage.disturbed
    assert usage.files == 6  # a, a/b, data, hardlink, usr, sparse
    assert MiB <= usage.bytes < MiB + 64 * 1024
    stopped = measure(root, Quota(max_bytes=MiB // 2))
    assert not stopped.complete and stopped.bytes > MiB // 2



_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _open_dir(top: Path, rel: Path = Path()) -> int:
    """A descriptor of top/rel, opened one level at a time (rel may be longer than PATH_MAX)."""
    fd = os.open(top, _DIR)
    for part in rel.parts:
        child = os.open(part, _DIR, dir_fd=fd)
        os.close(fd)
        fd = child
    return fd


def _chain(top: Path, rel: Path, depth: int, name: str = "d") -> Path:
    """Folders top/rel/name/name/..., `depth` levels; returns the deepest one relative to top."""
    fd = _open_dir(top, rel)
    try:
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)
    return rel.joinpath(*[name] * depth)


def _write(top: Path, rel: Path, name: str, data: bytes) -> None:
    fd = _open_dir(top, rel)
    try:
        out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, dir_fd=fd)
        os.write(out, data)
        os.close(out)
    finally:
        os.close(fd)


MEASURE_WITH_FEW_FDS = """
import json, resource, sys
from glm_agent.sandbox.quota import measure
resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
u = measure(sys.argv[1])
print(json.dumps([u.bytes, u.files, u.complete]))
"""


@pytest.fixture
def deep_root(tmp_path):
    """An empty folder, removed with `rm -rf` after the test (pytest's cleanup, shutil.rmtree,
    recurses once per level and fails on a tree 1,500 levels deep)."""
    import subprocess

    root = tmp_path / "ws"
    root.mkdir()
    yield root
    subprocess.run(["rm", "-rf", "--", str(root)], check=True)


def test_measure_counts_every_level_of_a_deep_tree_with_few_descriptors(deep_root):
    """A tree far deeper than the descriptors the walking process may hold (64): `du` and
    `find` agree with the walk, links are not followed at any depth, and branches at every
    depth are counted (the walk climbs back out of each)."""
    import json
    import subprocess

    import glm_agent

    root = deep_root
    trunk = _chain(root, Path(), 1500)
    for depth in (5, HELD_LEVELS + 1, 200, 700, 1499):
        at = Path(*trunk.parts[:depth])
        _write(root, _chain(root, at, 150, "s"), "data", b"x" * 100_000)
        _write(root, at, "small", b"y" * 10)
    _write(root, trunk, "bottom", b"z" * MiB)
    fd = _open_dir(root, trunk)
    try:
        os.link("bottom", "hardlink", src_dir_fd=fd, dst_dir_fd=fd)  # the same blocks: counted once
        os.symlink("/usr", "usr", dir_fd=fd)  # links to huge host trees: one entry each, never entered
        os.symlink("/".join([".."] * 1000), "up", dir_fd=fd)  # out of the workspace
    finally:
        os.close(fd)
    env = dict(os.environ, PYTHONPATH=str(Path(glm_agent.__file__).parents[1]))
    out = subprocess.run([sys.executable, "-c", MEASURE_WITH_FEW_FDS, str(root)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    size, files, complete = json.loads(out.stdout)
    du_bytes = int(subprocess.run(["du", "-sB1", str(root)], capture_output=True, text=True).stdout.split()[0])
    found = subprocess.run(["find", str(root), "-mindepth", "1"], capture_output=True, text=True).stdout
    assert complete and (size, files) == (du_bytes, found.count("\n"))
    assert files == 1500 + 5 * (150 + 2) + 4  # trunk, branches (data, small), bottom, hardlink, usr, up
    assert 5 * 100_000 + MiB < size < 20 * MiB
    stopped = measure(root, Quota(max_files=1600))  # stops early, at any depth too
    assert not stopped.complete and stopped.files == 1601


MOVER = """
import os, sys
a, b = sys.argv[1:]
while True:
    os.rename(a, b)
    os.rename(b, a)
"""


def test_folders_moved_during_the_walk_never_lead_it_out_of_the_workspace(tmp_path):
    """Sandboxed code moves a folder the walk is in (deeper than the descriptors it keeps) to
    another parent and back, as fast as it can. The walk climbs back through ".." only to the
    folder it came from: it never counts what lies outside the workspace, says when it was
    disturbed, leaks no descriptor, and the watcher counts such a walk again, exactly, with
    the mover stopped, which then goes on."""
    import subprocess
    import time

    ws = tmp_path / "ws"
    (ws / "b").mkdir(parents=True)
    (tmp_path / "outside.bin").write_bytes(b"o" * 8 * MiB)  # what an escaped walk would count
    moved = _chain(ws, _chain(ws, Path(), 150), 1, "m")
    _write(ws, _chain(ws, moved, 60, "e"), "data", b"x" * 100_000)
    at_rest = measure(ws)
    assert at_rest.complete and at_rest.files == 1 + 150 + 1 + 60 + 1
    fds = len(os.listdir("/proc/self/fd"))
    mover = subprocess.Popen([sys.executable, "-c", MOVER, str(ws / moved), str(ws / "b" / "m")])
    try:
        walks, disturbed, deadline = 0, 0, time.monotonic() + 30
        while (walks < 50 or not disturbed) and time.monotonic() < deadline:
            usage = measure(ws, attempts=1)
            walks += 1
            disturbed += usage.disturbed
            assert usage.bytes < 4 * MiB and usage.files <= 2 * at_rest.files, usage
            assert usage.complete != usage.disturbed
        assert disturbed, f"no walk out of {walks} met the moved folder on its way up"
        tripped: list[Usage] = []
        watcher = QuotaWatcher(ws, Quota(max_bytes=at_rest.bytes + MiB), tripped.append, pids=lambda: [mover.pid])
        for _ in range(100):
            usage = watcher.sample()
            assert usage is not None and not usage.disturbed and usage.bytes < 4 * MiB, usage
        assert not tripped
        state = Path(f"/proc/{mover.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state in "RSD" and mover.poll() is None  # continued after each frozen walk
    finally:
        mover.kill()
        mover.wait()
    assert len(os.listdir("/proc/self/fd")) == fds
    assert measure(ws) == at_rest


def test_config_caps_file_size_at_the_quota_and_validates():
    assert SandboxConfig().workspace_quota_mb == 2048 and SandboxConfig().workspace_max_files == 100_000
    assert SandboxConfig(file_size_mb=1024, workspace_quota_mb=20).file_size_limit_mb == 20
    assert SandboxConfig(file_size_mb=8, workspace_quota_mb=20).file_size_limit_mb == 8
    assert SandboxConfig(file_size_mb=None, workspace_quota_mb=None).file_size_limit_mb is None
    with pytest.raises(ValueError, match="workspace_quota_mb"):
        SandboxConfig(workspace_quota_mb=0)
    assert Quota.from_config(SandboxConfig(workspace_quota_mb=None, workspace_max_files=None)) is None


# -- the python tool ---------------------------------------------------------------------------


@needs_bwrap
async def test_python_many_small_files_then_cleanup(python, ws):
    r = await python("kept = 42\ni = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * 100)\n    i += 1")
    assert r.data["status"] == "quota", r.content
    assert HEADLINE in r.content and f"files (limit {MAX_FILES:,})" in r.content
    assert "The code was stopped" in r.content and "Delete files" in r.content
    assert MAX_FILES < du(ws).files < MAX_FILES * 3  # stopped soon after the limit
    # Over quota: code still runs (variables kept) but may not add anything.
    r = await python("print(kept)")
    assert r.content.startswith("42") and "This code still runs" in r.content
    before = du(ws).files
    r = await python("for j in range(100000):\n    open(f'g{j}', 'wb').write(b'y')")
    assert r.data["status"] == "quota" and du(ws).files < before + 3 * MAX_FILES  # polled: as above
    r = await python("import glob, os\nfor f in glob.glob('[fg]*'): os.remove(f)\nprint(len(os.listdir()))")
    assert r.content.startswith("0") and "within its quota again" in r.content
    r = await python("open('ok.txt', 'w').write('fine'); print(open('ok.txt').read())")
    assert r.content == "fine" and r.data["status"] == "ok"


@needs_bwrap
async def test_python_one_big_file(python, ws):
    r = await python("with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * 1024 * 1024)")
    # RLIMIT_FSIZE stops the file at the quota (or the watcher interrupts the loop first).
    assert "File too large" in r.content or r.data["status"] == "quota"
    assert HEADLINE in r.content and f"(limit {QUOTA_MB}.0 MiB)" in r.content, r.content
    assert (ws / "big.bin").stat().st_size <= QUOTA_MB * MiB
    r = await python("import os; os.remove('big.bin'); open('small', 'wb').write(b'1' * 1000)")
    assert r.data["status"] == "ok" and "within its quota again" in r.content


@needs_bwrap
async def test_python_subprocess_and_parallel_writers_are_killed(python, ws):
    r = await python(
        "import subprocess\n"
        "procs = [subprocess.Popen(f'n=0; while true; do n=$((n+1)); head -c 1000000 /dev/zero > w{i}-$n; done',"
        " shell=True) for i in range(4)]\n"
        "import time\ntime.sleep(20)")
    assert r.data["status"] == "quota" and "processes it started were killed" in r.content, r.content
    size = du(ws).bytes
    assert size < 3 * QUOTA_MB * MiB
    import asyncio

    await asyncio.sleep(1)
    assert du(ws).bytes == size  # nothing left writing


@needs_bwrap
async def test_python_threads_that_ignore_the_interrupt_get_the_kernel_killed(python, ws):
    r = await python("import threading, time\n"
                     "def fill(t):\n"
                     "    i = 0\n"
                     "    while True:\n"
                     "        open(f'{t}-{i}', 'wb').write(b'x' * 1024 * 1024); i += 1\n"
                     "for t in range(4):\n"
                     "    threading.Thread(target=fill, args=(t,), daemon=True).start()\n"
                     "time.sleep(30)")
    assert r.data["status"] == "quota" and r.data["restarted"], r.content
    assert "kept writing after an interrupt" in r.content and HEADLINE in r.content
    await _wait_stable(ws, quiet=0.5)  # nothing writes any more
    assert du(ws).bytes < 10 * QUOTA_MB * MiB  # the overshoot depends on the machine's load


@needs_bwrap
async def test_python_background_writers_between_calls(python, ws):
    # A process left running after the cell: killed, the kernel and its variables are kept.
    r = await python("import subprocess\nkept = 7\n"
                     "p = subprocess.Popen('n=0; while true; do n=$((n+1)); head -c 500000 /dev/zero > bg-$n; "
                     "sleep 0.01; done', shell=True)\nprint('started')")
    assert r.content == "started"
    await _wait_until(lambda: du(ws).bytes > QUOTA_MB * MiB)
    await _wait_stable(ws)
    r = await python("print(kept)")
    assert r.content.startswith("7") and not r.data["restarted"]
    assert "processes left running by earlier code kept writing; they were killed" in r.content
    r = await python("import os\nfor f in os.listdir(): os.remove(f)")
    assert "within its quota again" in r.content
    # A thread of the kernel itself: the kernel is killed and restarted, the model is told.
    r = await python("import threading, time\n"
                     "def fill():\n"
                     "    i = 0\n"
                     "    while True:\n"
                     "        open(f't{i}', 'wb').write(b'x' * 200000); i += 1; time.sleep(0.01)\n"
                     "threading.Thread(target=fill, daemon=True).start()\nprint('ok')")
    await _wait_until(lambda: du(ws).bytes > QUOTA_MB * MiB)
    await _wait_stable(ws)
    r = await python("print('after')")
    assert r.data["restarted"] and "killed for writing past the workspace quota" in r.content, r.content
    assert "the Python kernel kept writing" in r.content and HEADLINE in r.content


DEEP = "/".join(["d"] * 250)  # deeper than any walk holding a descriptor per level goes; 250 < MAX_FILES


@pytest.fixture
def busy_disk(tmp_path):
    """Something else on the host writes and deletes a 50 MB file, over and over, on the same
    file system as the workspace (outside it): not the workspace's growth."""
    import threading

    stop = threading.Event()
    path = tmp_path / "busy.bin"

    def churn() -> None:
        chunk = b"b" * MiB
        while not stop.is_set():
            with open(path, "wb") as f:
                for _ in range(50):
                    f.write(chunk)
            path.unlink()

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()


@needs_bwrap
async def test_python_deep_tree_counts_and_can_be_deleted_while_the_disk_is_busy(python, ws, busy_disk):
    r = await python(f"import os, shutil\nos.makedirs({DEEP!r}); print('made')")
    assert r.content == "made" and r.data["status"] == "ok", r.content
    assert du(ws).files == 250
    r = await python(f"open({DEEP!r} + '/big', 'wb').write(b'x' * 25 * 1024 * 1024)")  # EFBIG at 20 MiB
    assert HEADLINE in r.content and f"(limit {QUOTA_MB}.0 MiB)" in r.content, r.content
    r = await python(f"os.remove({DEEP!r} + '/big')\ni = 0\nwhile True:\n    open({DEEP!r} + f'/f{{i}}', 'w').close()\n"
                     "    i += 1")
    assert r.data["status"] == "quota" and f"files (limit {MAX_FILES:,})" in r.content, r.content
    r = await python("shutil.rmtree('d'); print('gone')")
    assert r.content.startswith("gone") and r.data["status"] == "ok", r.content
    assert "within its quota again" in r.content and not list(ws.iterdir())


async def _wait_until(check, timeout: float = 20.0) -> None:
    import asyncio
    import time

    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.05)


async def _wait_stable(ws: Path, quiet: float = 1.0) -> None:
    """Until the workspace stops growing (the watcher stopped the writer)."""
    import asyncio

    last = du(ws).bytes
    for _ in range(40):
        await asyncio.sleep(quiet)
        now = du(ws).bytes
        if now == last:
            return
        last = now
    raise AssertionError("the workspace kept growing")


@needs_bwrap
async def test_python_images_are_not_saved_over_quota(python, ws):
    import base64

    png = base64.b64encode(png_bytes()).decode()
    r = await python("open('filler', 'wb').write(b'x' * 25 * 1024 * 1024)")  # EFBIG at 20 MiB, over with the folder
    r = await python("from IPython.display import Image, display\n"
                     f"import base64\ndisplay(Image(data=base64.b64decode({png!r})))")
    assert "[Image not saved: The workspace quota is exceeded" in r.content, r.content
    assert not r.attachments and not list(ws.glob("image-*"))


# -- the shell tool ----------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("how, command", [
    ("many small files", "i=0; while true; do echo data > f$i; i=$((i+1)); done"),
    ("one big file", "dd if=/dev/zero of=big.bin bs=1M count=100"),
    ("parallel writers", "for i in $(seq 1 8); do (while true; do head -c 1000000 /dev/zero > p$i-$RANDOM; done) & "
                         "done; wait"),
])
async def test_shell_over_quota_is_stopped_and_explained(shell, ws, how, command):
    r = await shell(command)
    assert r.data["quota_exceeded"], r.content
    assert HEADLINE in r.content and "Delete files" in r.content
    usage = du(ws)
    assert usage.files < MAX_FILES * 4 and usage.bytes < 3 * QUOTA_MB * MiB
    if how == "one big file":
        assert (ws / "big.bin").stat().st_size == QUOTA_MB * MiB  # RLIMIT_FSIZE stops dd at the quota
    r = await shell("echo more > another")  # over quota: any growth is reported (and stopped)
    assert r.data["quota_exceeded"] and HEADLINE in r.content
    r = await shell("rm -rf -- * && echo cleaned")
    assert r.content.startswith("cleaned") and "within its quota again" in r.content
    r = await shell("echo ok > fine && cat fine")
    assert r.content == "ok" and not r.data["quota_exceeded"]


# -- no quota ----------------------------------------------------------------------------------


@needs_bwrap
async def test_quota_none_disables_it(ws):
    from glm_agent.tools.python import PythonTool
    from glm_agent.tools.shell import ShellTool

    cfg = CFG.with_(workspace_quota_mb=None, workspace_max_files=None, file_size_mb=64)
    shell = ShellTool(sandbox=cfg)
    r = await shell.call({"command": "dd if=/dev/zero of=a.bin bs=1M count=30 status=none; "
                                     "for i in $(seq 1 400); do : > n$i; done; ls | wc -l"}, ctx(ws))
    assert r.content == "401" and not r.data["quota_exceeded"]
    tool = PythonTool(sandbox=cfg, timeout=30)
    try:
        r = await tool.call({"code": "open('b.bin', 'wb').write(b'x' * 30 * 1024 * 1024)"}, ctx(ws))
    finally:
        await tool.aclose()
    assert r.data["status"] == "ok" and "quota" not in r.content
    assert (ws / "b.bin").stat().st_size == 30 * MiB


# -- the command line ----------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("quota_mb, stopped", [(1, True), (0, False)])
def test_cli_workspace_quota_option(tmp_path, quota_mb, stopped):
    import json
    import subprocess

    script = tmp_path / "script.json"
    script.write_text(json.dumps([
        {"content": "", "tool_calls": [{"name": "shell", "arguments": {
            "command": "dd if=/dev/zero of=data.bin bs=1M count=3 status=none; ls -s --block-size=M data.bin"}}]},
        "done",
    ]))
    env = dict(os.environ, GLM_AGENT_HOME=str(tmp_path / "home"), NO_COLOR="1")
    out = subprocess.run(
        [sys.executable, "-m", "glm_agent", "run", "done?", "--model", f"scripted:{script}", "--tools", "shell",
         "--workspace", str(tmp_path / "ws"), "--workspace-quota-mb", str(quota_mb), "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    results = [e["result"]["content"] for e in map(json.loads, out.stdout.splitlines()) if e.get("type") == "tool_result"]
    assert len(results) == 1
    assert (HEADLINE in results[0]) == stopped, results[0]
    assert ("3M data.bin" in results[0]) != stopped


# -- not root -------------------------------------------------------------------------------------

NOBODY_SCRIPT = """
import asyncio, json, os, sys
from glm_agent.sandbox import SandboxConfig, run_command
from glm_agent.sandbox.quota import measure
ws = sys.argv[1]
cfg = SandboxConfig(timeout=20, workspace_quota_mb=20, workspace_max_files=300, nprocs=None)
out = []
for cmd in ["i=0; while true; do echo x > f$i; i=$((i+1)); done",
            "for i in 1 2 3 4; do (n=0; while true; do n=$((n+1)); head -c 1000000 /dev/zero > p$i-$n; done) & done"
            "; wait"]:
    r = asyncio.run(run_command(cmd, ws, cfg))
    u = measure(ws)
    out.append({"uid": os.getuid(), "quota": r.quota_exceeded, "bytes": u.bytes, "files": u.files})
    os.system(f"rm -rf {ws}/*")
print(json.dumps(out))
"""


@needs_bwrap
def test_shell_quota_holds_when_glm_agent_is_not_root(tmp_path):
    """The whole host side (watcher, kills, /proc reads) as uid 65534, bubblewrap unprivileged."""
    import json

    from as_nobody import run_as_nobody

    out = run_as_nobody(NOBODY_SCRIPT, "glm-quota-nobody-")
    if "cannot sandbox code" in out.stderr:
        pytest.skip("unprivileged user namespaces are not available here")
    runs = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["uid"] for r in runs] == [65534, 65534]
    assert all(r["quota"] for r in runs), runs
    assert runs[0]["files"] < 3 * MAX_FILES and runs[1]["bytes"] < 3 * QUOTA_MB * MiB


@needs_bwrap
async def test_shell_deep_tree_counts_and_can_be_deleted_while_the_disk_is_busy(shell, ws, busy_disk):
    r = await shell(f"mkdir -p {DEEP} && echo made")
    assert r.content == "made" and not r.data["quota_exceeded"], r.content
    assert du(ws).files == 250
    r = await shell(f"head -c 12000000 /dev/zero > {DEEP}/a; head -c 12000000 /dev/zero > {DEEP}/b")
    assert r.data["quota_exceeded"] and f"(limit {QUOTA_MB}.0 MiB)" in r.content, r.content
    r = await shell(f"rm {DEEP}/a {DEEP}/b && cd {DEEP} && i=0; while true; do : > f$i; i=$((i+1)); done")
    assert r.data["quota_exceeded"] and f"files (limit {MAX_FILES:,})" in r.content, r.content
    r = await shell("rm -rf d && echo gone")
    assert r.content.startswith("gone") and not r.data["quota_exceeded"], r.content
    assert "within its quota again" in r.content and not list(ws.iterdir())
