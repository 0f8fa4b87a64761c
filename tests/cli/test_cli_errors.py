"""Errors from the layers below the CLI reach the user as one line, from one place (the
command group), for every command; a part that cannot be imported leaves the rest working."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from glm_agent.cli.errors import command_group
from glm_agent.core.errors import GlmAgentError, ModelError
from glm_agent.engine.errors import CheckpointError
from glm_agent.sandbox.errors import SandboxUnavailableError


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, GLM_AGENT_HOME=str(tmp_path / "home"), COLUMNS="80", NO_COLOR="1", **extra)
    env.pop("GLM_AGENT_DEBUG", None)
    return env


def _glm_agent(tmp_path: Path, *args: str, env: dict | None = None, code: str | None = None):
    head = ["-c", code] if code else ["-m", "glm_agent"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True,
                          env=env or _env(tmp_path), timeout=120, stdin=subprocess.DEVNULL)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


# -- the guard, on a group of its own ------------------------------------------------------

FAILURES = {
    "runtime": GlmAgentError("the thing failed;\nsee   the manual \x1b]0;pwned\x07"),
    "model": ModelError("model went away"),
    "engine": CheckpointError("/m.gguf is not a GGUF file"),
    "sandbox": SandboxUnavailableError("no user namespaces"),
    "oserror": PermissionError(13, "Permission denied", "/root/x"),
    "missing": ModuleNotFoundError("No module named 'playwright'", name="playwright"),
    "bug": KeyError("oops"),
}


def _failing_app():
    group = command_group()
    for name, exc in FAILURES.items():
        def command(exc: Exception = exc) -> None:
            raise exc
        group.command(name)(command)

    @group.command("exit")
    def exit_3() -> None:
        raise typer.Exit(3)

    @group.command("usage")
    def usage() -> None:
        raise typer.BadParameter("not like that", param_hint="--thing")

    return group


@pytest.mark.parametrize("name,needle", [
    ("runtime", "error: the thing failed; see the manual ^[]0;pwned^G"),
    ("model", "error: model went away"),
    ("engine", "error: /m.gguf is not a GGUF file"),
    ("sandbox", "error: cannot sandbox code: no user namespaces. Install bubblewrap"),
    ("oserror", "error: [Errno 13] Permission denied: '/root/x'"),
    ("missing", 'error: playwright is not installed: pip install "glm-agent[browser]"'),
    ("bug", "error: unexpected KeyError: 'oops' (a bug in glm-agent; GLM_AGENT_DEBUG=1 shows the traceback)"),
])
def test_each_kind_of_error_is_one_line_and_exit_1(monkeypatch, name, needle):
    monkeypatch.delenv("GLM_AGENT_DEBUG", raising=False)
    result = CliRunner().invoke(_failing_app(), [name])
    assert result.exit_code == 1, result.output
    assert _one_line(result.stderr).startswith(needle), result.stderr
    assert result.stdout == "" and "\x1b" not in result.stderr


def test_debug_shows_a_bugs_traceback_and_framework_exits_pass_through(monkeypatch):
    monkeypatch.setenv("GLM_AGENT_DEBUG", "1")
    result = CliRunner().invoke(_failing_app(), ["bug"])
    assert isinstance(result.exception, KeyError)
    monkeypatch.delenv("GLM_AGENT_DEBUG")
    assert CliRunner().invoke(_failing_app(), ["exit"]).exit_code == 3
    usage = CliRunner().invoke(_failing_app(), ["usage"])
    assert usage.exit_code == 2 and "not like that" in usage.output and "unexpected" not in usage.output
    assert CliRunner().invoke(_failing_app(), ["--help"]).exit_code == 0


# -- the real command line -----------------------------------------------------------------


@pytest.fixture
def bad_gguf(tmp_path):
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"garbage, not a model")
    return path


@pytest.mark.parametrize("args,needle", [
    (["model", "info", "{bad}"], "is not a GGUF file"),
    (["model", "info", "{missing}"], "not found"),
    (["model", "quantize", "{bad}", "{out}"], "is not a GGUF file"),
    (["model", "quantize", "{missing}", "{out}"], "not found"),
])
def test_model_errors_are_one_line_on_stderr(tmp_path, bad_gguf, args, needle):
    args = [a.format(bad=bad_gguf, missing=tmp_path / "missing.gguf", out=tmp_path / "out") for a in args]
    out = _glm_agent(tmp_path, *args)
    assert out.returncode == 1, out
    line = _one_line(out.stderr)
    assert line.startswith("error: ") and needle in line
    assert "error" not in out.stdout


@pytest.mark.parametrize("args", [["sandbox", "check"], ["sandbox", "run", "--", "true"]])
def test_sandbox_errors_are_one_line_on_stderr(tmp_path, args):
    out = _glm_agent(tmp_path, *args, env=_env(tmp_path, GLM_AGENT_BWRAP=str(tmp_path / "no-bwrap")))
    assert out.returncode == 1, out
    assert _one_line(out.stderr).startswith("error: cannot sandbox code:")


# An import of one command module that fails as it would without its optional packages.
BLOCK_IMAGE = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "glm_agent.cli.image":
            raise ModuleNotFoundError("No module named 'diffusers'", name="diffusers")
sys.meta_path.insert(0, Block())
sys.argv[0] = "glm-agent"
from glm_agent.cli import main
main()
"""


def test_a_group_that_cannot_import_says_what_to_install_and_the_rest_works(tmp_path):
    out = _glm_agent(tmp_path, "image", "generate", "a cat", code=BLOCK_IMAGE)
    assert out.returncode == 1
    assert _one_line(out.stderr) == 'error: `glm-agent image` is unavailable: diffusers is not installed: pip install "glm-agent[image]"'
    help_text = _glm_agent(tmp_path, "--help", code=BLOCK_IMAGE)
    assert help_text.returncode == 0 and "unavailable" in help_text.stdout
    tools = _glm_agent(tmp_path, "tools", code=BLOCK_IMAGE)
    assert tools.returncode == 0 and "python" in tools.stdout


def test_python_dash_m_glm_agent_and_the_package_exports(tmp_path):
    import glm_agent.cli

    assert {"app", "main"} <= set(glm_agent.cli.__all__) and callable(glm_agent.cli.main)
    out = _glm_agent(tmp_path, "--help")
    assert out.returncode == 0 and "python -m glm_agent" in out.stdout
    for command in ("chat", "run", "tools", "model", "eval", "sandbox", "image", "browser", "serve"):
        assert command in out.stdout


def test_the_console_script_names_the_exported_main(tmp_path):
    tomllib = pytest.importorskip("tomllib")
    from glm_agent.cli import main
    from glm_agent.core.lazy import import_object

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))
    target = project["project"]["scripts"]["glm-agent"]
    assert import_object(target) is main
    module, _, attr = target.partition(":")
    code = f"import sys; sys.argv = ['glm-agent', 'tools']; from {module} import {attr}; {attr}()"
    out = _glm_agent(tmp_path, code=code)
    assert out.returncode == 0 and "python" in out.stdout, out.stderr
