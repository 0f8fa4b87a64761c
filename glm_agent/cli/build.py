"""`build_agent(AgentOptions)`: the Agent that `chat` and `run` drive.

Problems with the options are reported as `typer.BadParameter` naming the option, before any
model weights load or any tool starts.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import typer

from glm_agent.cli.options import AgentOptions

if TYPE_CHECKING:
    from glm_agent.agent.loop import Agent
    from glm_agent.core.contracts import Tool

__all__ = ["build_agent", "build_tools", "load_user_tool"]


def build_agent(options: AgentOptions) -> Agent:
    """The agent described by `options`: its model, its tools, its limits."""
    from glm_agent.agent.loop import Agent
    from glm_agent.models.spec import ModelSpecError, resolve_model

    try:  # a bad --quant or --device is named here, before any weights load
        model = resolve_model(options.model, quant=options.quant, device=options.device, apar=options.apar or None)
    except ModelSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.option}") from None
    tools = build_tools(options)
    agent = Agent(model, tools=tools, system=options.system, max_steps=options.max_steps, workspace=options.workspace)
    from glm_agent.cli.mcp import attach_mcp_servers

    attach_mcp_servers(agent, options.mcp or [], sandbox=options.mcp_sandbox)
    return agent


def build_tools(options: AgentOptions) -> list[Tool]:
    """The tools of `--tools`, built-in or the user's own."""
    names = [n.strip() for n in options.tools.split(",") if n.strip()]
    settings = _tool_settings(options)
    if not options.unsafe_no_sandbox and {"python", "shell"} & set(names):
        from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

        try:  # say it now, not as a tool observation in the middle of a chat
            check_bwrap()
        except SandboxUnavailableError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tools") from None
    tools = [load_user_tool(n) if ":" in n else _builtin_tool(n, settings.get(n, {}), options) for n in names]
    seen: dict[str, str] = {}
    for name, tool in zip(names, tools):
        if tool.name in seen:
            raise typer.BadParameter(f"{seen[tool.name]} and {name} are both tools named {tool.name!r}; "
                                     "give each tool a different name", param_hint="--tools")
        seen[tool.name] = name
        _warn_if_unavailable(name, tool)
    return tools


def _tool_settings(options: AgentOptions) -> dict[str, dict[str, Any]]:
    """Constructor options per built-in tool; checked even for tools not asked for, so a bad
    option is an error rather than silently ignored."""
    from glm_agent.sandbox.config import SandboxConfig

    box = SandboxConfig(workspace_quota_mb=options.workspace_quota_mb or None)  # 0: no quota
    code = {"sandbox": box, "unsafe_no_sandbox": options.unsafe_no_sandbox}
    image = {k: v for k, v in (("model", options.image_model), ("backend", options.image_backend)) if v}
    browser: dict[str, Any] = {}
    if options.search or options.search_index:
        from glm_agent.tools.browser.search import provider_options

        try:
            provider, search_options = provider_options(options.search, options.search_index)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--search / --search-index") from None
        browser.update(search=provider, search_options=search_options)
    if options.browser_allow:
        browser["allow"] = list(options.browser_allow)
    return {"python": code, "shell": dict(code), "image": image, "browser": browser}


def _builtin_tool(name: str, settings: dict[str, Any], options: AgentOptions) -> Tool:
    from glm_agent.tools import missing_requirements, registry

    if name not in registry.names():
        raise typer.BadParameter(f"unknown tool {name!r}; available: {', '.join(registry.names())}", param_hint="--tools")
    # The CogView backend is a web API: it needs none of the local image packages.
    remote = name == "image" and (options.image_backend or os.environ.get("GLM_AGENT_IMAGE_BACKEND")) == "cogview"
    needs = None if remote else missing_requirements(name)
    if needs:
        raise typer.BadParameter(needs, param_hint="--tools")
    return registry.create_with(name, **settings)


def _warn_if_unavailable(name: str, tool: Tool) -> None:
    """Say at start that a tool cannot work (the image tool without a model or key); the tool
    itself tells the model, so it does not promise what it cannot do."""
    reason = getattr(tool, "unavailable", None)
    if isinstance(reason, str) and reason:
        called = name if name == tool.name else f"{name} ({tool.name})"
        typer.echo(f"warning: the {called} tool is unavailable: {' '.join(reason.split())} "
                   "(the model is told so)", err=True)


def _current_folder_importable() -> None:
    """Put the current folder first on sys.path, as `python -m` and uvicorn do, so that
    `--tools mytools:fn` finds ./mytools.py also from the `glm-agent` console script (whose
    sys.path starts with its own bin folder instead)."""
    cwd = os.getcwd()
    if not any(os.path.abspath(p or os.curdir) == cwd for p in sys.path):
        sys.path.insert(0, cwd)


def load_user_tool(target: str) -> Tool:
    """`package.module:name` -> a Tool; a plain function is wrapped with `@tool`, a Tool class
    is instantiated. Modules are found in the current folder first, then on sys.path."""
    from glm_agent.core.contracts import Tool
    from glm_agent.core.lazy import import_object
    from glm_agent.tools.function import tool

    _current_folder_importable()
    try:
        obj = import_object(target)
        if isinstance(obj, type) and issubclass(obj, Tool):
            obj = obj()
        if isinstance(obj, Tool):
            return obj
        if callable(obj):
            return tool(obj)
    except ModuleNotFoundError as exc:
        top = target.partition(":")[0].partition(".")[0]
        where = f" (looked in the current folder {os.getcwd()} and on sys.path)" if exc.name == top else ""
        raise typer.BadParameter(f"cannot load tool {target!r}: {exc}{where}", param_hint="--tools") from None
    except Exception as exc:  # the user's own code: any failure is a bad --tools value
        raise typer.BadParameter(f"cannot load tool {target!r}: {type(exc).__name__}: {exc}", param_hint="--tools") from None
    raise typer.BadParameter(f"{target!r} is neither a function nor a Tool", param_hint="--tools")
