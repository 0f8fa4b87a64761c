"""Fixtures for the CLI tests: the browser tests' local website, for `glm-agent browser`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The browser tests' local website, and the engine tests' checkpoint writers for `model info`.
sys.path.insert(0, str(Path(__file__).parents[1] / "tools" / "browser"))
sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))

from browser_site import Site  # noqa: E402


@pytest.fixture(scope="module")
def site():
    with Site() as s:
        yield s
