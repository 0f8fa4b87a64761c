"""`glm-agent browser ...`: drive the browser tool by hand (check a setup, see what the model sees).

Everything printed from a page (its text, titles, links, citations) goes through
`glm_agent.core.terminal.safe_text`: a page's escape sequences are shown, never obeyed.
"""

from __future__ import annotations

import asyncio
from typing import List, Optional

import typer

from glm_agent.cli.errors import command_group

__all__ = ["app"]

app = command_group(
    help="Use the browser tool directly: run GLM-4 browser actions, open a page, try a search provider.",
    no_args_is_help=True,
)

_PROVIDER = typer.Option(
    None, "--search", "-s", help="Search provider: local | searxng | bing | duckduckgo (default: from GLM_AGENT_SEARCH)."
)
_INDEX = typer.Option(None, "--index", help="Local index: a folder of .html files or a site URL to crawl.")
_SEARXNG = typer.Option(None, "--searxng-url", help="SearXNG base URL (its settings must enable JSON).")
_ALLOW = typer.Option(None, "--allow", help="Private host[:port] or network the browser may reach (repeatable).")
_CHROMIUM = typer.Option(None, "--chromium", help="Chromium executable (default: $GLM_AGENT_CHROMIUM or `chromium`).")


def _run(actions: list[str], search, index, searxng_url, allow, chromium, page_chars: int) -> None:
    from glm_agent.core.terminal import safe_text
    from glm_agent.tools.browser.citations import render_citations
    from glm_agent.tools.browser.search import provider_options
    from glm_agent.tools.browser.tool import BrowserTool

    try:
        name, options = provider_options(search, index, searxng_url)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--search / --index / --searxng-url") from None

    async def main() -> int:
        tool = BrowserTool(
            name, search_options=options, allow=allow or (), executable_path=chromium, page_chars=page_chars
        )
        failed = 0
        try:
            for action in actions:
                result = await tool.run(action)
                header = f"[{result.metadata or 'result'}] {action}"
                typer.secho(safe_text(header), fg="red" if result.is_error else "cyan", bold=True)
                typer.echo(safe_text(result.content))
                typer.echo()
                failed += result.is_error
            if tool.citations.items:
                typer.secho("citations:", bold=True)
                for cid, entry in sorted(tool.citations.items.items())[:50]:
                    line = render_citations(f"【{cid}】", {cid: entry}, style="text")
                    typer.echo(safe_text(f"  {line}  [{cid}]"))
        finally:
            await tool.aclose()
        return 1 if failed == len(actions) else 0

    raise typer.Exit(asyncio.run(main()))


@app.command("run")
def run_actions(
    actions: List[str] = typer.Argument(..., help="""Browser actions, e.g. 'search("glm-4")' 'mclick([0, 1, 2])'."""),
    search: Optional[str] = _PROVIDER,
    index: Optional[str] = _INDEX,
    searxng_url: Optional[str] = _SEARXNG,
    allow: Optional[List[str]] = _ALLOW,
    chromium: Optional[str] = _CHROMIUM,
    page_chars: int = typer.Option(4000, help="Characters per part of a page."),
) -> None:
    """Run GLM-4 browser actions in one session and print each observation."""
    _run(actions, search, index, searxng_url, allow, chromium, page_chars)


@app.command("open")
def open_page(
    url: str = typer.Argument(..., help="URL to open."),
    allow: Optional[List[str]] = _ALLOW,
    chromium: Optional[str] = _CHROMIUM,
    page_chars: int = typer.Option(100_000, help="Characters per part of the page."),
) -> None:
    """Open a URL and print the page as the model reads it."""
    _run([f"open_url({url!r})"], None, None, None, allow, chromium, page_chars)


@app.command("search")
def search_web(
    query: str = typer.Argument(..., help="What to search for."),
    recency_days: Optional[int] = typer.Option(None, help="Only results from the last N days."),
    search: Optional[str] = _PROVIDER,
    index: Optional[str] = _INDEX,
    searxng_url: Optional[str] = _SEARXNG,
) -> None:
    """Search with a provider and print the numbered results."""
    days = f", recency_days={recency_days}" if recency_days else ""
    _run([f"search({query!r}{days})"], search, index, searxng_url, None, None, 4000)
