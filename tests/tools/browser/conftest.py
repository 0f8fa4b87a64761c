"""Fixtures for the browser tests: the local test website and one shared Chromium per module."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).parent))

from browser_site import Site  # noqa: E402

from glm_agent.tools.browser import BrowserError, ChromiumProcess, find_chromium  # noqa: E402


@pytest.fixture(scope="module")
def site():
    with Site() as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chromium():
    try:
        find_chromium()
    except BrowserError as exc:
        pytest.skip(str(exc))
    process = ChromiumProcess()
    yield process
    await process.aclose()

