"""The README's set-up commands and the scripts behind them.

The README gives two commands: one installs and starts the chat, one installs and runs the
tests (which `.ci/run` runs too). The scripts are exercised here without installing anything:
`install.sh --dry-run` prints the plan, and the shared shell functions run for real.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
INSTALL_AND_CHAT = "bash scripts/install.sh && .venv/bin/glm-agent chat"
INSTALL_AND_TEST = "bash scripts/test.sh"


def _bash(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def _install_plan(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/install.sh", "--dry-run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def _setup_section() -> str:
    return README.split("## Set-up: two commands", 1)[1].split("\n## ", 1)[0]


def test_the_readme_gives_the_two_setup_commands():
    blocks = re.findall(r"```bash\n(.*?)```", _setup_section(), re.S)
    commands = [line.strip() for block in blocks for line in block.splitlines()]
    assert INSTALL_AND_CHAT in commands and INSTALL_AND_TEST in commands, commands


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")]
    assert any(re.fullmatch(rf"(exec )?{re.escape(INSTALL_AND_TEST)}( .*)?", line.strip()) for line in lines), lines


def _pyproject_torch_pin() -> str:
    return re.search(r'"(torch[=<>~!][^"]*)"', (ROOT / "pyproject.toml").read_text(encoding="utf-8")).group(1)


def test_install_defaults_to_cpu_torch_then_the_package_in_dot_venv():
    plan = _install_plan()
    assert plan.returncode == 0, plan.stderr
    pin = _pyproject_torch_pin()
    assert f".venv/bin/python -m pip install --disable-pip-version-check {pin} " \
           f"--index-url https://download.pytorch.org/whl/cpu" in plan.stdout, plan.stdout
    assert ".venv/bin/python -m pip install --disable-pip-version-check -e .[embedded,python]" in plan.stdout
    # torch is installed before the package, so the package's own pin finds it satisfied.
    assert plan.stdout.index(pin) < plan.stdout.index("-e .[")


def test_install_cuda_takes_torch_from_the_default_index(tmp_path):
    plan = _install_plan("--cuda", "--venv", str(tmp_path / "env"), "embedded,gpu")
    assert plan.returncode == 0, plan.stderr
    torch_line = next(line for line in plan.stdout.splitlines() if _pyproject_torch_pin() in line)
    assert "--index-url" not in torch_line and torch_line.startswith(str(tmp_path / "env" / "bin" / "python"))
    assert f"-m venv {tmp_path / 'env'}" in plan.stdout
    assert "-e .[embedded,gpu]" in plan.stdout


def test_install_other_torch_index():
    plan = _install_plan("--torch-index", "https://download.pytorch.org/whl/cu126")
    assert "--index-url https://download.pytorch.org/whl/cu126" in plan.stdout


@pytest.mark.parametrize("args,message", [
    (["embedded,nosuchextra"], "unknown extra 'nosuchextra'"),
    (["--frobnicate"], "unknown option --frobnicate"),
])
def test_install_refuses_what_it_does_not_know(args, message):
    plan = _install_plan(*args)
    assert plan.returncode == 2 and message in plan.stderr, (plan.returncode, plan.stderr)
    assert "pip install" not in plan.stdout


def test_install_help():
    out = subprocess.run(["bash", "scripts/install.sh", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--cpu" in out.stdout and "--cuda" in out.stdout and "#" not in out.stdout


def test_extras_of_reads_every_extra_of_pyproject():
    out = _bash("source scripts/lib.sh; extras_of pyproject.toml")
    extras = out.stdout.split()
    assert {"engine", "embedded", "python", "dev", "all"} <= set(extras), extras
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert all(f'\n{name} = [' in text for name in extras)


@pytest.mark.parametrize("body,expected", [
    ("def test_ok():\n    pass\n", 0),
    ("def test_bad():\n    assert False\n", 1),
    ("# no tests here\n", 1),  # pytest's 5, "no tests collected", must not pass
])
def test_run_pytest_fails_when_nothing_is_collected(tmp_path, body, expected):
    (tmp_path / "test_sample.py").write_text(body)
    out = _bash('source scripts/lib.sh; run_pytest "$1" -q -p no:cacheprovider --rootdir "$2" "$2"',
                sys.executable, str(tmp_path))
    assert out.returncode == expected, out.stdout + out.stderr
    assert ("collected no tests" in out.stderr) == (body.startswith("#"))


def test_externally_managed_tells_a_virtualenv_from_a_distribution_python():
    # This interpreter runs the tests from a virtualenv (or a writable install): pip may use it.
    out = _bash('source scripts/lib.sh; externally_managed "$1"', sys.executable)
    managed_here = sys.prefix == sys.base_prefix and (Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED").is_file()
    assert out.returncode == (0 if managed_here else 1)
    system = Path("/usr/bin/python3")  # Debian 12 / Ubuntu 23.04+: marked, pip refuses it
    if system.exists():
        stdlib = subprocess.run([system, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
                                capture_output=True, text=True, timeout=60).stdout.strip()
        marked = (Path(stdlib) / "EXTERNALLY-MANAGED").is_file()
        assert _bash('source scripts/lib.sh; externally_managed "$1"', str(system)).returncode == (0 if marked else 1)


def test_reachable_tells_an_answering_index_from_a_dead_one(tmp_path):
    # install.sh asks this before taking torch from PyTorch's index (offline mirrors cannot).
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        check = 'source scripts/lib.sh; reachable "$1" "$2"'
        assert _bash(check, sys.executable, f"http://127.0.0.1:{port}/no-such-page/").returncode == 0  # a 404 answers
        server.shutdown()
        server.server_close()
        assert _bash(check, sys.executable, f"http://127.0.0.1:{port}/").returncode == 1
    finally:
        server.shutdown()
        server.server_close()
