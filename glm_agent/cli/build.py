"""`build_agent(AgentOptions)`: the Agent that `chat` and `run` drive.

Problems with the options are reported as `typer.BadParameter` naming the option, before any
model weights load or any tool starts.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import typer

from glm_agent.cli.options import AgentOptions

if TYPE_CHECKING:
    from glm_agent.agent.loop import Agent
    from glm_agent.core.contracts import Tool

__all__ = ["build_agent", "load_user_tool"]


def build_agent(options: AgentOptions) -> Agent:
    """The agent described by `options`: its model, its tools, its limits."""
    from glm_agent.agent.loop import Agent
    from glm_agent.models.spec import ModelSpecError, resolve_model

    try:
        model = resolve_model(options.model, quant=options.quant, device=options.device, apar=options.apar or None)
    except ModelSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    names = [n.strip() for n in options.tools.split(",") if n.strip()]
    settings = _tool_settings(options)
    if not options.unsafe_no_sandbox and {"python", "shell"} & set(names):
        from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

        try:  # say it now, not as a tool observation in the middle of a chat
            check_bwrap()
        except SandboxUnavailableError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tools") from None
    tools = [load_user_tool(n) if ":" in n else _builtin_tool(n, settings.get(n, {}), options) for n in names]
    return Agent(model, tools=tools, system=options.system, max_steps=options.max_steps, workspace=options.workspace)


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


def load_user_tool(target: str) -> Tool:
    """`package.module:name` -> a Tool; a plain function is wrapped with `@tool`, a Tool class
    is instantiated."""
    from glm_agent.core.contracts import Tool
    from glm_agent.core.lazy import import_object
    from glm_agent.tools.function import tool

    try:
        obj = import_object(target)
        if isinstance(obj, type) and issubclass(obj, Tool):
            obj = obj()
        if isinstance(obj, Tool):
            return obj
        if callable(obj):
            return tool(obj)
    except Exception as exc:  # the user's own code: any failure is a bad --tools value
        raise typer.BadParameter(f"cannot load tool {target!r}: {type(exc).__name__}: {exc}", param_hint="--tools") from None
    raise typer.BadParameter(f"{target!r} is neither a function nor a Tool", param_hint="--tools")
