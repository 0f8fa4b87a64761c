"""Fixtures for the browser tests: the local test website and one shared Chromium per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from browser_site import Site  # noqa: E402


@pytest.fixture(scope="module")
def site():
    with Site() as s:
        yield s



