"""Attack: a file in the workspace breaks every later kernel start (persistent denial of
service). The kernel starts in the workspace, which sandboxed code writes; whatever the
code leaves there must not replace a module the kernel imports, at start or later, nor its
configuration. Planted through the shell tool, through the kernel itself (then a crash and
a restart), without a sandbox, and as an unprivileged user. Also: a kernel from an
interpreter under /tmp starts.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
from pathlib import Path

import pytest

from glm_agent.sandbox import KernelSession, SandboxConfig, bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")

BOMB = "raise SystemExit('planted module imported')\n"

# Modules the kernel (or its first plot) imports, and files it could read as configuration.
MODULES = ["ipykernel_launcher", "zmq", "traitlets", "IPython", "json", "matplotlib_inline", "sitecustomize",
           "usercustomize", "jupyter_client", "jupyter_core", "tornado", "comm", "asyncio", "logging", "socket",
           "platform", "typing", "debugpy", "psutil", "pygments", "jedi", "ipython_config",
           "ipython_kernel_config", "jupyter_config"]
PACKAGES = ["ipykernel", "matplotlib"]


def plant_shell_script() -> str:
    bomb = shlex.quote(BOMB.strip())
    lines = [f"printf '%s\\n' {bomb} > {name}.py" for name in MODULES]
    for pkg in PACKAGES:
        lines += [f"mkdir -p {pkg}", f"printf '%s\\n' {bomb} > {pkg}/__init__.py"]
    lines += ["echo 'VALUE = 42' > mymod.py", "echo planted"]
    return "\n".join(lines)


def plant_python() -> str:
    return textwrap.dedent(f"""
        import os
        for name in {MODULES!r}:
            open(name + '.py', 'w').write({BOMB!r})
        for pkg in {PACKAGES!r}:
            os.makedirs(pkg, exist_ok=True)
            open(os.path.join(pkg, '__init__.py'), 'w').write({BOMB!r})
        open('mymod.py', 'w').write('VALUE = 42\\n')
        print('planted')
    """)


def works(k: KernelSession) -> None:
    """Starts, runs code, imports the user's own module, plots, and restarts after a crash."""
    res = k.execute_sync("import json, mymod\nprint(json.dumps(mymod.VALUE))", timeout=30)
    assert res.status == "ok" and res.text.strip() == "42", (res.text, res.notice)
    res = k.execute_sync("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()", timeout=60)
    assert res.status == "ok" and any("image/png" in o.data for o in res.outputs), res.text
    res = k.execute_sync("import os; os._exit(1)")
    assert res.restarted and "could not be started" not in (res.notice or ""), res.notice
    res = k.execute_sync("print('again')", timeout=30)
    assert res.status == "ok" and res.text.strip() == "again", (res.text, res.notice)


def test_files_planted_by_the_shell_tool_do_not_break_kernel_starts(kernel_factory, ws, config, sh):
    assert sh(plant_shell_script(), ws, config).output.strip() == "planted"
    assert (ws / "ipykernel_launcher.py").read_text() == BOMB
    works(kernel_factory(ws))


def test_files_planted_by_the_kernel_do_not_break_its_restart(kernel_factory, ws):
    k = kernel_factory(ws)
    assert k.execute_sync(plant_python()).text.strip() == "planted"
    works(k)
    k.restart_sync()
    assert k.execute_sync("print(1 + 1)").text.strip() == "2"


def test_a_new_session_on_a_planted_workspace_starts(kernel_factory, ws):
    """The persistent part: the next session on the same workspace."""
    first = kernel_factory(ws)
    assert first.execute_sync(plant_python()).text.strip() == "planted"
    first.shutdown_sync()
    works(kernel_factory(ws))


def test_without_a_sandbox_too(kernel_factory, ws, config):
    cfg = config.with_(unsafe_no_sandbox=True)
    k = kernel_factory(ws, cfg)
    assert k.execute_sync(plant_python()).text.strip() == "planted"
    works(k)


def test_kernel_from_an_interpreter_under_tmp(kernel_factory, ws, tmp_path):
    """The private /tmp must not hide the interpreter: a venv under /tmp runs the kernel.

    A --system-site-packages venv of the running interpreter's base, with a .pth file that
    adds this environment's site-packages (where ipykernel is), so no install is needed."""
    venv = tmp_path / "venv"
    base = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    subprocess.run([str(base), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "parent.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    k = kernel_factory(ws, SandboxConfig(memory_mb=1024, nprocs=64, timeout=10), python=str(venv / "bin" / "python"))
    res = k.execute_sync("import sys\nprint(sys.prefix)")
    assert res.status == "ok" and res.text.strip() == str(venv), (res.text, res.notice)
    assert str(venv) in k.sandbox.rebound_folders()
    # Read-only inside.
    res = k.execute_sync(f"open({str(venv / 'pyvenv.cfg')!r}, 'a')")
    assert res.status == "error" and "Read-only file system" in res.text


NOBODY_SCRIPT = textwrap.dedent("""
    import os, sys, tempfile
    from glm_agent.sandbox import KernelSession, SandboxConfig
    ws = tempfile.mkdtemp()
    open(os.path.join(ws, 'ipykernel_launcher.py'), 'w').write('raise SystemExit(1)')
    k = KernelSession(ws, SandboxConfig(memory_mb=1024, timeout=10), python=sys.executable)
    r = k.execute_sync("import os; print(os.getuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])")
    print('first', r.status, r.text.strip())
    r = k.execute_sync('import os; os._exit(1)')
    print('crash', r.restarted, r.notice)
    print('again', k.execute_sync('print(6 * 7)').text.strip())
    runtime = k._runtime
    k.shutdown_sync()
    print('removed', not runtime.exists())
""")


def test_kernel_as_an_unprivileged_user(tmp_path):
    """The kernel's whole path (host-only files, socket links, restart) as uid 65534, from a
    venv of the system Python that borrows this environment's packages."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to switch to the nobody user")
    system = Path("/usr/bin/python3")
    probe = subprocess.run([str(system), "-c", "import sys; print(sys.version_info[:2])"], capture_output=True,
                           text=True) if system.exists() else None
    if probe is None or probe.stdout.strip() != str(sys.version_info[:2]):
        pytest.skip("no system Python of this version to make a venv nobody can run (/root is 0700)")
    root = Path(tempfile.mkdtemp(prefix="glm-sec-nobody-"))
    try:
        venv = root / "venv"
        subprocess.run([str(system), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                       check=True, timeout=120)
        site = subprocess.run([str(venv / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        repo = Path(__file__).resolve().parents[2]
        Path(site, "parent.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n{repo}\n")
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o755 if path.is_dir() else path.stat().st_mode | 0o644)
        nobody = [shutil.which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups", "--",
                  "env", f"HOME={root}", "PATH=/usr/bin:/bin", str(venv / "bin" / "python")]
        check = subprocess.run([*nobody, "-c", "import ipykernel, glm_agent"], capture_output=True, text=True,
                               cwd=root)
        if check.returncode != 0:
            pytest.skip("this environment's packages or repository are not readable by nobody")
        out = subprocess.run([*nobody, "-c", NOBODY_SCRIPT], capture_output=True, text=True, cwd=root, timeout=120)
        lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
        assert lines.get("first") == "ok 65534 0000000000000000", out.stdout + out.stderr
        assert lines["crash"].startswith("True") and "could not" not in lines["crash"], out.stdout
        assert lines["again"] == "42" and lines["removed"] == "True", out.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)
