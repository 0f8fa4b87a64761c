"""Time the browser tool on a local website it serves itself (127.0.0.1, no outside traffic).

    python bench/browser.py              # 5 runs
    python bench/browser.py --runs 9

Table 1, per action (median / min / max of --runs, and the ratio to a warm `open_url`):
cold start (a new Chromium launched, then the first page), warm `open_url`, `search` on the
local index (the index built once beforehand), `mclick` of 3 pages, `scroll`, `find`.
Table 2: `mclick` of 3 slow pages (0.6 s server delay each) with 4 tabs vs 1 tab, to show
what the parallel loading buys. Every request goes through the session's guard proxy, as
in real use.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

__all__ = ["main"]

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tools" / "browser"))


async def _timed(coro) -> tuple[float, object]:
    started = time.perf_counter()
    result = await coro
    return time.perf_counter() - started, result


async def bench(runs: int) -> tuple[dict[str, list[float]], dict[str, list[float]], str]:
    from browser_site import Site

    from glm_agent.tools.browser import BrowserTool, ChromiumProcess, LocalIndexProvider

    times: dict[str, list[float]] = {k: [] for k in ("cold start + first page", "open_url (warm)", "search", "mclick of 3", "scroll", "find")}
    slow: dict[str, list[float]] = {"4 tabs (parallel)": [], "1 tab (one by one)": []}
    with Site() as site:
        index = LocalIndexProvider(site.url("/"))
        await index.search("warm up")  # crawl the site once; searches below hit the index
        version = ""
        for _ in range(runs):
            process = ChromiumProcess()
            tool = BrowserTool(index, allow=[site.host], browser=process)
            t, result = await _timed(tool.run(f'open_url("{site.url("/python.html")}")'))
            assert not result.is_error, result.content
            times["cold start + first page"].append(t)
            version = (await process.browser()).version
            t, result = await _timed(tool.run(f'open_url("{site.url("/lighthouses.html")}")'))
            times["open_url (warm)"].append(t)
            t, found = await _timed(tool.run('search("programming language")'))
            times["search"].append(t)
            ids = [int(k) for k, v in found.data["citations"].items() if v["url"].endswith(("python.html", "rust.html", "go.html"))]
            t, result = await _timed(tool.run(f"mclick({ids[:3]})"))
            assert not result.is_error and len(result.data["quote_ids"]) == 3, result.content
            times["mclick of 3"].append(t)
            await tool.run(f'open_url("{site.url("/lighthouses.html")}")')
            t, _ = await _timed(tool.run("scroll(5)"))
            times["scroll"].append(t)
            t, _ = await _timed(tool.run('find("zanzibar")'))
            times["find"].append(t)
            for label, tabs in (("4 tabs (parallel)", 4), ("1 tab (one by one)", 1)):
                limited = BrowserTool(index, allow=[site.host], browser=process, max_tabs=tabs)
                found = await limited.run('search("slow page served slowly")')
                ids = [int(k) for k, v in found.data["citations"].items() if "/slow/" in v["url"]]
                await limited.run(f"mclick([{ids[0]}])")  # open the context and a first tab
                t, result = await _timed(limited.run(f"mclick({ids})"))
                assert len(result.data["quote_ids"]) == 3, result.content
                slow[label].append(t)
                await limited.aclose()
            await tool.aclose()
            await process.aclose()
    return times, slow, version


def _row(name: str, values: list[float], base: float) -> str:
    med = statistics.median(values)
    return f"| {name:<24} | {med * 1000:9.1f} | {min(values) * 1000:9.1f} | {max(values) * 1000:9.1f} | {med / base:8.2f}x |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="runs per measurement (median reported)")
    args = parser.parse_args(argv)
    times, slow, version = asyncio.run(bench(args.runs))
    print(f"browser tool, {args.runs} runs, Chromium {version}, Python {platform.python_version()}, {platform.machine()}")
    print()
    head = "| action                   | median ms |    min ms |    max ms | vs open_url |"
    print(head)
    print("|" + "---|" * 5)
    base = statistics.median(times["open_url (warm)"])
    for name, values in times.items():
        print(_row(name, values, base))
    print()
    print("mclick of 3 pages that each take 0.6 s to answer:")
    print("| tabs                     | median ms |    min ms |    max ms | vs 4 tabs |")
    print("|" + "---|" * 5)
    base = statistics.median(slow["4 tabs (parallel)"])
    for name, values in slow.items():
        print(_row(name, values, base))


if __name__ == "__main__":
    main()
