import pytest
from typer.testing import CliRunner

from glm_agent.cli.sandbox import app
from glm_agent.sandbox import bwrap_available

pytestmark = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap is not installed")


def test_run_prints_output_and_passes_the_exit_code(tmp_path):
    (tmp_path / "f.txt").write_text("hello")
    res = CliRunner().invoke(app, ["run", "--workspace", str(tmp_path), "--", "bash", "-c", "cat f.txt; exit 3"])
    assert res.output == "hello" and res.exit_code == 3


def _rows(output: str) -> dict[str, str]:
    """`sandbox check` table rows by their first column."""
    return {line.split("  ")[0]: line for line in output.splitlines() if "  " in line}


def test_check_prints_a_table_of_what_holds():
    res = CliRunner().invoke(app, ["check", "--memory-mb", "1024"])
    assert res.exit_code == 0, res.output
    assert "{" not in res.output and "FAIL" not in res.output
    rows = _rows(res.output)
    expected = {
        "capabilities (CapEff)": "0000000000000000 (none)",
        "memory (RLIMIT_AS)": "1024 MiB",
        "umount /root": "refused",
        "network": "none (only loopback)",
        "read-only /usr": "read-only",
        "workspace /mnt/data": "writable",
        "PID namespace": "own (",
        "hidden /home": "",
        "hidden /run": "",
        "user": "uid ",
    }
    for what, found in expected.items():
        assert found in rows[what] and rows[what].endswith(" ok"), rows.get(what)
    assert "workspace quota" in rows and "processes + threads" in rows


def test_check_without_a_sandbox_says_what_is_missing():
    res = CliRunner().invoke(app, ["check", "--unsafe-no-sandbox", "--memory-mb", "1024"])
    assert res.exit_code == 0, res.output
    rows = _rows(res.output)
    assert "NO SANDBOX" in res.output
    assert "not checked (no sandbox)" in rows["umount /root"]  # nothing that would act on the host
    assert "1024 MiB" in rows["memory (RLIMIT_AS)"]
    assert not rows["network"].endswith(("ok", "FAIL"))
