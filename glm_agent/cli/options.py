"""The options `chat` and `run` share, written once.

Each `AgentOptions` field carries its typer option; `@with_agent_options` gives a command all
of them and hands it one `AgentOptions`. A new option is one new field.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from glm_agent.models.spec import MODEL_SPEC_HELP

__all__ = ["AgentOptions", "with_agent_options"]


def _option(default: Any, *names: str, help: str, **settings: Any) -> Any:
    """A dataclass field that also describes its command-line option."""
    return dataclasses.field(default=default, metadata={"option": typer.Option(default, *names, help=help, **settings)})


@dataclass(frozen=True)
class AgentOptions:
    """How to build the agent that `chat` and `run` drive (see `glm_agent.cli.build`)."""

    model: Optional[str] = _option(None, "--model", "-m", help=f"Model: {MODEL_SPEC_HELP}.")
    tools: str = _option(
        "python", "--tools", "-t",
        help="Comma-separated tools: python, shell, browser, image, or module:function for your own ('' for none).",
    )
    system: Optional[str] = _option(None, "--system", "-s", help="System prompt.")
    max_steps: int = _option(10, "--max-steps", help="Model calls allowed per user turn.")
    unsafe_no_sandbox: bool = _option(
        False, "--unsafe-no-sandbox", help="Run python/shell without bubblewrap (resource limits only)."
    )
    workspace_quota_mb: int = _option(
        2048, "--workspace-quota-mb", min=0, help="Most MiB python/shell code may keep in the workspace (0: no limit)."
    )
    image_model: Optional[str] = _option(None, "--image-model", help="Diffusers model folder or hub id for the image tool.")
    quant: Optional[str] = _option(None, "--quant", help="Weight-only quantization for a local model: int8 or int4.")
    device: Optional[str] = _option(None, "--device", help="Device for a local model: cpu, cuda, auto.")
    apar: bool = _option(False, "--apar", help="APAR parallel decoding (needs an APAR-trained model).")
    workspace: Optional[Path] = _option(None, "--workspace", help="Session folder for files the tools write.")
    search: Optional[str] = _option(None, "--search", help="Browser search provider: local, searxng, bing, duckduckgo.")
    search_index: Optional[str] = _option(None, "--search-index", help="Folder of pages or site URL for --search local.")
    browser_allow: Optional[list[str]] = _option(
        None, "--browser-allow", help="Host[:port] the browser may reach although private (repeatable)."
    )
    image_backend: Optional[str] = _option(
        None, "--image-backend", help="Image backend: diffusers (local) or cogview (Zhipu API)."
    )
    mcp: Optional[list[str]] = _option(
        None, "--mcp", help="MCP server whose tools to use: a command, an http(s)://.../mcp URL, or an mcp.json "
        "file (repeatable; <home>/mcp.json is always read).",
    )
    mcp_sandbox: bool = _option(
        False, "--mcp-sandbox", help="Run stdio MCP servers in the sandbox (workspace only, no network)."
    )


def with_agent_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command(options: AgentOptions, ...)` -> a typer command that takes every AgentOptions
    field as an option (where `options` stands in its signature) and passes them as one object."""
    fields = dataclasses.fields(AgentOptions)
    hints = typing.get_type_hints(AgentOptions)
    own = inspect.signature(command, eval_str=True)
    if "options" not in own.parameters:
        raise TypeError(f"{command.__name__} needs an `options: AgentOptions` parameter")
    clash = {f.name for f in fields} & set(own.parameters)
    if clash:
        raise TypeError(f"{command.__name__}: parameters {sorted(clash)} are already AgentOptions fields")
    # typer calls with keywords only, so every parameter becomes keyword-only: no ordering rules.
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.metadata["option"],
                                annotation=hints[f.name]) for f in fields]
    params: list[inspect.Parameter] = []
    for p in own.parameters.values():
        params += shared if p.name == "options" else [p.replace(kind=inspect.Parameter.KEYWORD_ONLY)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        options = AgentOptions(**{f.name: kwargs.pop(f.name) for f in fields})
        return command(options, **kwargs)

    # typer reads the parameters from the signature and the types from the annotations.
    wrapper.__signature__ = own.replace(parameters=params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
