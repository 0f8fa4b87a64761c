"""Planted links, fifos and devices in the workspace never make the host read or write
outside it, through any entry point.

Sandboxed code controls the workspace (bound writable at /mnt/data), so it can put a
symbolic link where the host is about to write an image (`image-1.png -> /etc/...`), turn a
folder into a link to a host folder, or leave a fifo where the host will read. The targets
are host files that exist (must stay unchanged) and that do not (must not be created), in a
host folder, in /etc and in the home folder. Entry points: the python tool's image saving
(png, svg, jpeg), the image tool's PNG, inline display (directly and through the chat), and
the `Workspace` API every one of them goes through.
"""

from __future__ import annotations

import base64
import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from glm_agent.sandbox import SandboxConfig, bwrap_available

sys.path.insert(0, str(Path(__file__).parent))
from _workspace_helpers import (  # noqa: E402
    ORIGINAL,
    Targets,
    finishes_within,
    open_fifo_writer,
    png_bytes,
)

needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")
CFG = SandboxConfig(memory_mb=1024, nprocs=64, timeout=20)
KITTY = {"TERM": "xterm-kitty"}


@pytest.fixture
def targets(tmp_path):
    t = Targets.make(tmp_path / "host")
    yield t
    t.cleanup()


def terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=80), buffer


def jpeg_bytes() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30, 30, 200)).save(buffer, format="JPEG")
    return buffer.getvalue()


SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'
DISPLAYS = {
    "png": ("png", f"from IPython.display import Image, display\n"
                   f"display(Image(data=base64.b64decode({base64.b64encode(png_bytes()).decode()!r})))"),
    "svg": ("svg", f"from IPython.display import SVG, display\ndisplay(SVG({SVG!r}))"),
    "jpeg": ("jpg", f"from IPython.display import Image, display\n"
                    f"display(Image(data=base64.b64decode({base64.b64encode(jpeg_bytes()).decode()!r}), "
                    "format='jpeg'))"),
}


# -- the python tool -----------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("kind", list(DISPLAYS))
async def test_python_tool_never_writes_an_image_through_a_planted_link(kind, ws, targets):
    from glm_agent.core.contracts import ToolContext
    from glm_agent.tools.python import PythonTool

    ext, show = DISPLAYS[kind]
    # Links at the next image names (dangling ones first: the old code wrote through those),
    # then a fifo; the image must land under the first free name, as a regular file.
    aims = [str(p) for _, p in targets.all()[::-1]]
    n_links = len(aims)
    plant = (
        "import os, base64\n"
        f"for i, aim in enumerate({aims!r}, 1):\n"
        f"    os.symlink(aim, f'image-{{i}}.{ext}')\n"
        f"os.mkfifo('image-{n_links + 1}.{ext}')\n"
    )
    tool = PythonTool(sandbox=CFG, timeout=20)
    try:
        result = await tool.call({"code": plant + show}, ToolContext(session_id="t", workspace=ws))
    finally:
        await tool.aclose()
    assert targets.check_untouched() == []
    expected = ws / f"image-{n_links + 2}.{ext}"
    assert f"[Image saved: {expected.name}]" in result.content, result.content
    assert [a.path for a in result.attachments] == [str(expected)]
    assert stat.S_ISREG(os.lstat(expected).st_mode) and expected.stat().st_size > 0
    for i in range(1, n_links + 1):
        assert (ws / f"image-{i}.{ext}").is_symlink()  # left alone, not replaced


# -- the image tool ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)
    from glm_agent.tools.image.testing import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("tiny-sd") / "pipe")


async def test_image_tool_never_writes_through_a_planted_link(tiny_pipeline, ws, targets, monkeypatch):
    """The image tool picks random names; make the first ones known and planted (a link to each
    target, then a fifo): it must skip them all and write a new regular file."""
    import glm_agent.tools.image.tool as image_tool
    from glm_agent.core.contracts import ToolContext
    from glm_agent.tools.image import ImageTool

    tokens = iter([f"{i:06x}" for i in range(100)])
    monkeypatch.setattr(image_tool.secrets, "token_hex", lambda n=3: next(tokens))
    stamp = image_tool.datetime.now(image_tool.timezone.utc).strftime("%Y%m%d-%H%M%S")
    planted = []
    for i, (_, aim) in enumerate(targets.all()):
        link = ws / f"image-{stamp}-{i:06x}.png"
        os.symlink(aim, link)
        planted.append(link)
    os.mkfifo(ws / f"image-{stamp}-{len(planted):06x}.png")
    tool = ImageTool(model=tiny_pipeline, steps=2, size="64x64")
    try:
        result = await tool.call({"prompt": "a red cat"}, ToolContext(session_id="t", workspace=ws))
    finally:
        await tool.aclose()
    assert not result.is_error, result.content
    assert targets.check_untouched() == []
    saved = Path(result.data["path"])
    assert saved.parent == ws and stat.S_ISREG(os.lstat(saved).st_mode)
    assert saved.read_bytes().startswith(b"\x89PNG")
    assert all(link.is_symlink() for link in planted)


# -- inline display --------------------------------------------------------------------------------


def test_inline_display_does_not_follow_a_planted_link(ws, tmp_path):
    """A link where an image was (swapped in after the tool wrote it) shows nothing, even
    when it points at a real picture on the host."""
    from glm_agent.tools.image.display import show_image_inline

    host_picture = tmp_path / "host" / "private.png"
    host_picture.parent.mkdir()
    host_picture.write_bytes(png_bytes((1, 2, 3)))
    os.symlink(host_picture, ws / "image-1.png")
    console, buffer = terminal()
    assert not show_image_inline(ws / "image-1.png", console, env=KITTY)
    assert buffer.getvalue() == ""


def test_inline_display_of_a_fifo_returns_at_once(ws):
    from glm_agent.tools.image.display import show_image_inline

    fifo = ws / "image-1.png"
    os.mkfifo(fifo)
    console, buffer = terminal()
    finished, value = finishes_within(lambda: show_image_inline(fifo, console, env=KITTY), 5.0,
                                      open_fifo_writer(fifo))
    assert finished, "showing a fifo blocked the terminal"
    assert value is False and buffer.getvalue() == ""


async def test_chat_shows_no_image_through_links_in_the_workspace(ws, tmp_path, monkeypatch):
    """The chat draws image attachments inline: a link at the file, or at a folder on its
    path, is not followed; a real image in the workspace still is."""
    from glm_agent.agent import Agent
    from glm_agent.cli.chat import ChatApp
    from glm_agent.core.messages import Attachment, ToolCall, ToolResult
    from glm_agent.models.scripted import ScriptedModel
    from glm_agent.tools.function import tool

    host = tmp_path / "host"
    (host / "pics").mkdir(parents=True)
    (host / "pics" / "private.png").write_bytes(png_bytes((1, 2, 3)))
    (host / "private.png").write_bytes(png_bytes((1, 2, 3)))
    os.symlink(host / "private.png", ws / "final-link.png")
    os.symlink(host / "pics", ws / "sub")  # a folder on the path is a link
    (ws / "real.png").write_bytes(png_bytes((9, 9, 9), (4, 4)))

    @tool
    def plots():
        """Return the plots."""
        return ToolResult(content="plots", attachments=[
            Attachment(path=str(ws / "final-link.png"), mime="image/png"),
            Attachment(path=str(ws / "sub" / "private.png"), mime="image/png"),
            Attachment(path=str(ws / "real.png"), mime="image/png"),
        ])

    monkeypatch.setenv("TERM", "xterm-kitty")
    monkeypatch.delenv("TMUX", raising=False)
    monkeypatch.delenv("TERM_PROGRAM", raising=False)
    agent = Agent(ScriptedModel([ToolCall(name="plots", arguments={}), "done"]), tools=[plots], workspace=ws)
    console, buffer = terminal()
    await ChatApp(agent, console=console).turn("show me")
    images = [base64.b64decode("".join(chunk)) for chunk in _kitty_images(buffer.getvalue())]
    assert images == [(ws / "real.png").read_bytes()]


def _kitty_images(out: str) -> list[list[str]]:
    import re

    images: list[list[str]] = []
    for keys, data in re.findall(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\", out):
        if "a=T" in keys:
            images.append([])
        images[-1].append(data)
    return images


# -- the Workspace API --------------------------------------------------------------------------------


def test_create_skips_links_and_fifos_and_never_writes_through_them(ws, targets):
    from glm_agent.sandbox.workspace import Workspace

    for i, (_, aim) in enumerate(targets.all(), 1):
        os.symlink(aim, ws / f"image-{i}.png")
    os.mkfifo(ws / f"image-{len(targets.all()) + 1}.png")
    path, n = Workspace(ws).create_numbered("image", "png", b"data")
    assert n == len(targets.all()) + 2 and path == ws / f"image-{n}.png" and path.read_bytes() == b"data"
    with pytest.raises(FileExistsError):
        Workspace(ws).create("image-1.png", b"x")
    assert targets.check_untouched() == []


@pytest.mark.parametrize("aim", ["host dir", "/etc", "home"])
def test_a_linked_folder_on_the_path_is_refused(ws, tmp_path, aim):
    from glm_agent.sandbox.workspace import UnsafePathError, Workspace

    folder = {"host dir": tmp_path / "hostdir", "/etc": Path("/etc"), "home": Path.home()}[aim]
    folder.mkdir(exist_ok=True)
    name = f"glm-agent-test-{os.getpid()}-{aim.replace('/', '')}"
    (ws / "deep").mkdir()
    os.symlink(folder, ws / "deep" / "out")
    files = Workspace(ws)
    try:
        with pytest.raises(UnsafePathError, match="symbolic link"):
            files.create(f"deep/out/{name}", b"x")
        with pytest.raises(UnsafePathError, match="symbolic link"):
            files.read_bytes("deep/out/passwd" if aim == "/etc" else f"deep/out/{name}")
        assert not os.path.lexists(folder / name)
    finally:
        if os.path.lexists(folder / name):
            os.unlink(folder / name)


def test_reads_refuse_links_fifos_and_devices_at_once(ws, targets):
    from glm_agent.sandbox.workspace import UnsafePathError, Workspace, read_file

    files = Workspace(ws)
    os.symlink(targets.existing["host file"], ws / "link.txt")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        files.read_bytes("link.txt")
    with pytest.raises(UnsafePathError):
        read_file(ws / "link.txt")  # no workspace given: the file itself is still checked
    fifo = ws / "pipe"
    os.mkfifo(fifo)
    finished, value = finishes_within(lambda: files.read_bytes("pipe"), 5.0, open_fifo_writer(fifo))
    assert finished and isinstance(value, UnsafePathError) and "fifo" in str(value)
    if os.geteuid() == 0:  # sandboxed root keeps CAP_MKNOD: a device node can be planted
        os.mknod(ws / "disk", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        with pytest.raises(UnsafePathError, match="device"):
            files.read_bytes("disk")
    with pytest.raises(UnsafePathError, match="outside the workspace"):
        files.read_bytes(targets.existing["host file"])
    with pytest.raises(UnsafePathError, match=r"\.\."):
        files.read_bytes("../host/existing.txt")


def test_reads_are_size_capped_and_copy_out_is_safe(ws, tmp_path):
    from glm_agent.sandbox.workspace import UnsafePathError, Workspace, WorkspaceError

    files = Workspace(ws)
    (ws / "big.bin").write_bytes(b"x" * 5000)
    with pytest.raises(WorkspaceError, match="too large"):
        files.read_bytes("big.bin", max_bytes=4096)
    assert files.read_bytes("big.bin", max_bytes=5000) == b"x" * 5000
    out = files.copy_out("big.bin", tmp_path / "copy.bin")
    assert out.read_bytes() == b"x" * 5000
    os.symlink("/etc/hostname", ws / "evil")
    with pytest.raises(UnsafePathError):
        files.copy_out("evil", tmp_path / "copy2.bin")
    assert not (tmp_path / "copy2.bin").exists()


def test_full_disk_and_file_size_limit_are_clear_errors(tmp_path):
    """EFBIG (RLIMIT_FSIZE) and ENOSPC (a full tmpfs, made by bubblewrap) become
    WorkspaceFullError with a message that says what to do; no half file is left."""
    code = (
        "import resource, sys\n"
        "from glm_agent.sandbox.workspace import Workspace, WorkspaceFullError\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
        "try:\n"
        "    Workspace(sys.argv[1]).create('big.bin', b'x' * 10000)\n"
        "except WorkspaceFullError as exc:\n"
        "    print('FULL', exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("FULL could not write big.bin in the workspace: the file is larger than "
                                 "the file-size limit"), out.stdout + out.stderr
    assert "Delete files" in out.stdout and not (tmp_path / "big.bin").exists()
    if bwrap_available():
        from glm_agent.sandbox import find_bwrap

        small = tmp_path / "small"
        small.mkdir()
        code = code.replace("resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n", "").replace(
            "b'x' * 10000", "b'x' * 200000")
        out = subprocess.run([find_bwrap(), "--dev-bind", "/", "/", "--size", "65536", "--tmpfs", str(small),
                              sys.executable, "-c", code, str(small)], capture_output=True, text=True, timeout=60)
        assert out.stdout.startswith("FULL could not write big.bin in the workspace: the disk is full"), \
            out.stdout + out.stderr


@needs_bwrap
async def test_hard_links_to_host_files_cannot_be_made_in_the_sandbox(tmp_path, targets):
    """Why the Workspace needs no hard-link check: every bind is its own mount, so link()
    from anything outside the workspace mount fails with EXDEV, read-only or writable bind."""
    from glm_agent.sandbox import run_command

    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_bytes(ORIGINAL)
    host_file = targets.existing["host file"]
    cfg = CFG.with_(ro_binds=(f"{host_file.parent}:/hostro",), rw_binds=(f"{other}:/hostrw",))
    ws = tmp_path / "ws2"
    script = (f"ln /hostro/{host_file.name} a; echo $?; ln /hostrw/f b; echo $?; "
              f"ln {targets.existing['/etc file']} c; echo $?")
    res = await run_command(script, ws, cfg)
    assert res.output.count("Invalid cross-device link") == 3, res.output  # EXDEV
    assert [line for line in res.output.splitlines() if line.isdigit()] == ["1", "1", "1"]
    assert os.listdir(ws) == []
