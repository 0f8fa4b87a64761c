"""The `glm-agent` command: chat, run, tools, and the model / eval / sandbox / image / browser /
serve groups.

Everything heavy (torch, playwright, jupyter_client, diffusers) is imported inside the
commands that need it, so `glm-agent --help` stays instant.
"""

from __future__ import annotations

from typing import Any

import typer

from glm_agent.cli import commands, sessions
from glm_agent.cli.errors import ReportingGroup, command_group, fail, install_hint
from glm_agent.core.lazy import import_object

__all__ = ["app", "main"]


def _flags_shown_as_flags(command: Any) -> None:
    """typer's help prints a value type for every option, flags too (`--apar <bool>`), as if
    they took a value. An empty metavar leaves a flag's type blank; done for every command
    below, and for the `--help` each command makes when help is first asked for."""
    for param in command.params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    make_help_option = command.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    command.get_help_option = get_help_option
    for sub in getattr(command, "commands", {}).values():
        _flags_shown_as_flags(sub)


class _Root(ReportingGroup):
    """The `glm-agent` group: typer builds it with every subcommand in place, so their help
    is fixed here once (see `_flags_shown_as_flags`)."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        _flags_shown_as_flags(self)


app = command_group(
    cls=_Root,
    name="glm-agent",
    help="A runtime for tool-using GLM agents: chat in the terminal, run one prompt, serve, evaluate.",
    no_args_is_help=True,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from importlib.metadata import PackageNotFoundError, version

        try:  # the installed distribution's version (the package root is above the cli layer)
            typer.echo(f"glm-agent {version('glm-agent')}")
        except PackageNotFoundError:
            raise fail("glm-agent is not installed (run from a source tree?): pip install -e .", 1) from None
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """The options of `glm-agent` itself (the group's help text is the one given to `app`)."""


app.command()(commands.chat)
app.command()(commands.run)
app.command("tools")(commands.list_tools)
app.command("sessions")(sessions.sessions)

# name -> (typer group, or command for "serve", as an import target; help). Each module keeps
# its own heavy imports inside its commands.
_GROUPS = {
    "model": ("glm_agent.cli.model:model_app",
              "Inspect and quantize local models (GGUF files, safetensors folders, 'embedded')."),
    "eval": ("glm_agent.cli.eval:eval_app", "Run AgentBench-style suites and compare runs."),
    "sandbox": ("glm_agent.cli.sandbox:app", "Check the sandbox; run a command in it."),
    "image": ("glm_agent.cli.image:app", "Generate images with the image tool; build a tiny test model."),
    "browser": ("glm_agent.cli.browser:app", "Drive the browser tool by hand (search, open, run actions)."),
    "serve": ("glm_agent.cli.serve:serve", "Serve a model over an OpenAI-compatible HTTP API."),
    "mcp": ("glm_agent.cli.mcp:app", "Model Context Protocol: serve glm-agent's tools to MCP clients."),
}


def _mount(name: str, target: str, help: str) -> None:
    try:
        part = import_object(target)
    except ImportError as exc:  # a part that cannot load must not break the other commands
        reason = install_hint(exc)

        # Takes any arguments, so `glm-agent image generate ...` still gets this message.
        @app.command(name, help=f"{help} (unavailable: {reason})",
                     context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
        def unavailable() -> None:
            raise fail(f"`glm-agent {name}` is unavailable: {reason}", 1)

        return
    if isinstance(part, typer.Typer):
        app.add_typer(part, name=name, help=help)
    else:
        app.command(name, help=help)(part)


for _name, (_target, _help) in _GROUPS.items():
    _mount(_name, _target, _help)


def main() -> None:
    """The console entry point."""
    app()
