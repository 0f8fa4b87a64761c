"""URLGuard: which URLs and addresses the browser may reach (unit tests; the attacks end to end
are in tests/security/test_browser_guard.py)."""

from __future__ import annotations

import pytest
from browser_site import fake_resolver

from glm_agent.tools.browser import URLGuard


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://127.0.0.1:8000/", "loopback"),
        ("http://localhost/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://10.0.0.1/", "private network"),
        ("http://192.168.1.1/admin", "private network"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::ffff:10.0.0.1]/", "private network"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("http://100.64.0.1/", "non-public"),
    ],
)
async def test_blocks_non_public_addresses(url, words):
    verdict = await URLGuard().check_url(url)
    assert not verdict and verdict.kind == "blocked"
    assert words in verdict.reason and "blocked for safety" in verdict.reason


@pytest.mark.parametrize(
    "url, words",
    [
        ("file:///etc/passwd", "file:// URLs are blocked"),
        ("javascript:alert(1)", "`javascript:` URLs are not supported"),
        ("ftp://example.com/x", "`ftp:` URLs are not supported"),
        ("example.com/page", "without a scheme"),
        ("http:///nohost", "no host"),
    ],
)
async def test_rejects_schemes_and_malformed_urls(url, words):
    verdict = await URLGuard().check_url(url)
    assert not verdict and words in verdict.reason


async def test_allow_list_entries():
    guard = URLGuard(["127.0.0.1:8123", "http://127.0.0.1:9000/", "intranet.test", "10.1.0.0/16", "*.corp.test"],
                     resolver=fake_resolver({"intranet.test": "10.9.9.9", "wiki.corp.test": "10.2.0.5", "api.test": "10.1.2.3"}))
    assert await guard.check_url("http://127.0.0.1:8123/page")
    assert await guard.check_url("http://127.0.0.1:9000/")
    assert not await guard.check_url("http://127.0.0.1:8124/")  # other port: still blocked
    assert await guard.check_url("http://intranet.test:5000/")
    assert await guard.check_url("https://wiki.corp.test/")
    assert await guard.check_url("http://api.test/")  # resolved address inside the allowed network
    assert not await guard.check_url("http://10.2.0.1/")


async def test_every_resolved_address_is_checked():
    async def two_addresses(host, port):
        return ["93.184.215.14", "10.0.0.7"]  # public + private: a rebinding-style answer

    verdict = await URLGuard(resolver=two_addresses).check_url("http://sneaky.test/")
    assert not verdict and "sneaky.test resolves to 10.0.0.7" in verdict.reason


async def test_public_address_allowed_and_dns_failure_explained():
    guard = URLGuard(resolver=fake_resolver({"docs.test": "93.184.215.14"}))
    ok = await guard.check_url("https://docs.test/a")
    assert ok and ok.addresses == ["93.184.215.14"]
    bad = await guard.check_url("https://nowhere.test/")
    assert not bad and bad.kind == "dns" and "could not resolve host 'nowhere.test'" in bad.reason


async def test_allow_private_and_file_roots(tmp_path):
    assert await URLGuard(allow_private=True).check_url("http://10.0.0.1/")
    page = tmp_path / "a.html"
    page.write_text("<p>x</p>")
    guard = URLGuard(allow_files=[tmp_path])
    assert guard.check_file(page.as_uri())
    assert not guard.check_file("file:///etc/passwd")
    assert not guard.check_file((tmp_path / ".." / "escape.html").as_uri())
