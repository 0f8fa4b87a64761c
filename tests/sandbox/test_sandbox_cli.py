import pytest
from typer.testing import CliRunner

from glm_agent.sandbox import bwrap_available
from glm_agent.sandbox.cli import app

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")


def test_run_prints_output_and_passes_the_exit_code(tmp_path):
    (tmp_path / "f.txt").write_text("hello")
    res = CliRunner().invoke(app, ["run", "--workspace", str(tmp_path), "--", "bash", "-c", "cat f.txt; exit 3"])
    assert res.output == "hello" and res.exit_code == 3


def test_check_reports_isolation():
    res = CliRunner().invoke(app, ["check", "--memory-mb", "1024"])
    assert res.exit_code == 0, res.output
    assert "'network blocked': True" in res.output and "'root read-only': True" in res.output
    assert "'memory limit (MiB)': 1024" in res.output
