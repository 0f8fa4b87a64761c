"""The `glm-agent` command: chat, run, tools, and the model / eval / sandbox / image / browser /
serve groups.

Everything heavy (torch, playwright, jupyter_client, diffusers) is imported inside the
commands that need it, so `glm-agent --help` stays instant.
"""

from __future__ import annotations

import typer

from glm_agent.cli import commands
from glm_agent.cli.errors import command_group, fail, install_hint
from glm_agent.core.lazy import import_object

__all__ = ["app", "main"]

app = command_group(
    name="glm-agent",
    help="A runtime for tool-using GLM agents: chat in the terminal, run one prompt, serve, evaluate.",
    no_args_is_help=True,
)
app.command()(commands.chat)
app.command()(commands.run)
app.command("tools")(commands.list_tools)

# name -> (typer group, or command for "serve", as an import target; help). Each module keeps
# its own heavy imports inside its commands.
_GROUPS = {
    "model": ("glm_agent.cli.model:model_app", "Inspect and quantize local models."),
    "eval": ("glm_agent.cli.eval:eval_app", "Run AgentBench-style suites and compare runs."),
    "sandbox": ("glm_agent.cli.sandbox:app", "Check the sandbox; run a command in it."),
    "image": ("glm_agent.cli.image:app", "Generate images with the image tool; build a tiny test model."),
    "browser": ("glm_agent.cli.browser:app", "Drive the browser tool by hand (search, open, run actions)."),
    "serve": ("glm_agent.cli.serve:serve", "Serve a model over an OpenAI-compatible HTTP API."),
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
