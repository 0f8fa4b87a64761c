"""`glm-agent browser ...` sub-commands (`glm_agent.cli.browser:app`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from glm_agent.cli.browser import app
from glm_agent.tools.browser import BrowserError, find_chromium


def test_run_actions_against_the_local_site(site):
    try:
        find_chromium()
    except BrowserError as exc:
        pytest.skip(str(exc))
    result = CliRunner().invoke(
        app,
        ["run", "--index", site.url("/"), "--allow", site.host, 'search("rust memory safety")', "mclick([0])",
         'open_url("http://10.0.0.1/")'],
    )
    assert result.exit_code == 0, result.output
    assert "# 【0†Rust guide†127.0.0.1】" in result.output
    assert "[quote_result] mclick([0])" in result.output and "Rust 1.0 was released in May 2015" in result.output
    assert "10.0.0.1 is a private network address" in result.output
    assert f"Rust guide ({site.url('/rust.html')})" in result.output


def test_bad_options_are_reported():
    result = CliRunner().invoke(app, ["search", "x", "--search", "local"])
    assert result.exit_code != 0 and "--index" in result.output
