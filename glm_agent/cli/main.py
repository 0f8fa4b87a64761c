"""The `glm-agent` command line: chat, run, tools, and the model / eval / serve groups.

Everything heavy (torch, playwright, jupyter_client, diffusers) is imported inside the
commands that need it, so `glm-agent --help` stays instant.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from glm_agent.models.spec import MODEL_SPEC_HELP

__all__ = ["app", "main", "build_agent"]

app = typer.Typer(
    name="glm-agent",
    help="A runtime for tool-using GLM agents: chat in the terminal, run one prompt, serve, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ModelOpt = typer.Option(None, "--model", "-m", help=f"Model: {MODEL_SPEC_HELP}.")
ToolsOpt = typer.Option(
    "python", "--tools", "-t",
    help="Comma-separated tools: python, shell, browser, image, or module:function for your own ('' for none).",
)
SystemOpt = typer.Option(None, "--system", "-s", help="System prompt.")
StepsOpt = typer.Option(10, "--max-steps", help="Model calls allowed per user turn.")
UnsafeOpt = typer.Option(False, "--unsafe-no-sandbox", help="Run python/shell without bubblewrap (resource limits only).")
QuotaOpt = typer.Option(2048, "--workspace-quota-mb", min=0, help="Most MiB python/shell code may keep in the workspace (0: no limit).")
ImageModelOpt = typer.Option(None, "--image-model", help="Diffusers model folder or hub id for the image tool.")
ImageBackendOpt = typer.Option(None, "--image-backend", help="Image backend: diffusers (local) or cogview (Zhipu API).")
QuantOpt = typer.Option(None, "--quant", help="Weight-only quantization for a local model: int8 or int4.")
DeviceOpt = typer.Option(None, "--device", help="Device for a local model: cpu, cuda, auto.")
AparOpt = typer.Option(False, "--apar", help="APAR parallel decoding (needs an APAR-trained model).")
WorkspaceOpt = typer.Option(None, "--workspace", help="Session folder for files the tools write.")
SearchOpt = typer.Option(None, "--search", help="Browser search provider: local, searxng, bing, duckduckgo.")
SearchIndexOpt = typer.Option(None, "--search-index", help="Folder of pages or site URL for --search local.")
AllowOpt = typer.Option(None, "--browser-allow", help="Host[:port] the browser may reach although private (repeatable).")


def build_agent(
    model: str | None,
    tools: str,
    system: str | None = None,
    max_steps: int = 10,
    unsafe_no_sandbox: bool = False,
    image_model: str | None = None,
    quant: str | None = None,
    device: str | None = None,
    apar: bool = False,
    workspace: Path | None = None,
    search: str | None = None,
    search_index: str | None = None,
    browser_allow: list[str] | None = None,
    image_backend: str | None = None,
    workspace_quota_mb: int | None = None,
):
    """The agent the CLI commands drive, from their options."""
    from glm_agent.agent.loop import Agent
    from glm_agent.models.spec import ModelSpecError, resolve_model
    from glm_agent.tools import missing_requirements, registry

    try:
        chat_model = resolve_model(model, quant=quant, device=device, apar=apar or None)
    except ModelSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint="--model") from None
    names = [n.strip() for n in tools.split(",") if n.strip()]
    options: dict[str, dict] = {
        "python": {"unsafe_no_sandbox": True} if unsafe_no_sandbox else {},
        "shell": {"unsafe_no_sandbox": True} if unsafe_no_sandbox else {},
        "image": {k: v for k, v in (("model", image_model), ("backend", image_backend)) if v},
        "browser": {},
    }
    if workspace_quota_mb is not None:  # 0: no quota
        from glm_agent.sandbox.config import SandboxConfig

        box = SandboxConfig(workspace_quota_mb=workspace_quota_mb or None)
        options["python"]["sandbox"] = options["shell"]["sandbox"] = box
    if search or search_index:
        from glm_agent.cli.browser import provider_options

        provider, search_options = provider_options(search, search_index, None)
        options["browser"].update(search=provider, search_options=search_options)
    if browser_allow:
        options["browser"]["allow"] = list(browser_allow)
    if not unsafe_no_sandbox and {"python", "shell"} & set(names):
        from glm_agent.sandbox import SandboxUnavailableError, check_bwrap

        try:  # say it now, not as a tool observation in the middle of a chat
            check_bwrap()
        except SandboxUnavailableError as exc:
            raise typer.BadParameter(str(exc), param_hint="--tools") from None
    instances = []
    for name in names:
        if ":" in name:  # a user tool: module:function (or module:Tool instance)
            instances.append(load_user_tool(name))
            continue
        if name not in registry.names():
            raise typer.BadParameter(f"unknown tool {name!r}; available: {', '.join(registry.names())}", param_hint="--tools")
        remote_images = name == "image" and (image_backend or os.environ.get("GLM_AGENT_IMAGE_BACKEND")) == "cogview"
        needs = None if remote_images else missing_requirements(name)
        if needs:
            raise typer.BadParameter(needs, param_hint="--tools")
        instances.append(registry.create_with(name, **options.get(name, {})))
    return Agent(chat_model, tools=instances, system=system, max_steps=max_steps, workspace=workspace)


def _fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear line on stderr; raise the returned Exit."""
    from glm_agent.core.terminal import safe_text

    typer.echo(f"error: {safe_text(message)}", err=True)
    return typer.Exit(code)


def _stdin_is_open() -> bool:
    """False when the program was started with stdin closed (`<&-`): sys.stdin is then None."""
    try:
        os.fstat(sys.stdin.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return True


def _prompt_from_stdin() -> str:
    """The prompt for `run -`: all of stdin, as UTF-8 text."""
    if not _stdin_is_open():
        raise _fail("`run -` reads the prompt from stdin, but stdin is closed; "
                    "pipe it in: echo 'question' | glm-agent run -")
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else sys.stdin.read()
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"stdin is not UTF-8 text (bad byte at offset {exc.start}); convert it, e.g. with iconv") from None


def load_user_tool(target: str):
    """`package.module:name` -> a Tool; plain functions are wrapped with `@tool`."""
    from glm_agent.core.contracts import Tool
    from glm_agent.tools.function import tool

    module_name, _, attr = target.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise typer.BadParameter(f"cannot load tool {target!r}: {exc}", param_hint="--tools") from None
    if isinstance(obj, type) and issubclass(obj, Tool):
        obj = obj()
    if isinstance(obj, Tool):
        return obj
    if callable(obj):
        return tool(obj)
    raise typer.BadParameter(f"{target!r} is neither a function nor a Tool", param_hint="--tools")


@app.command()
def chat(
    model: Optional[str] = ModelOpt,
    tools: str = ToolsOpt,
    system: Optional[str] = SystemOpt,
    max_steps: int = StepsOpt,
    unsafe_no_sandbox: bool = UnsafeOpt,
    workspace_quota_mb: int = QuotaOpt,
    image_model: Optional[str] = ImageModelOpt,
    quant: Optional[str] = QuantOpt,
    device: Optional[str] = DeviceOpt,
    apar: bool = AparOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    search: Optional[str] = SearchOpt,
    search_index: Optional[str] = SearchIndexOpt,
    browser_allow: Optional[list[str]] = AllowOpt,
    image_backend: Optional[str] = ImageBackendOpt,
    load: Optional[Path] = typer.Option(None, "--load", help="Start from a session saved with /save."),
) -> None:
    """Chat with the agent in the terminal (streamed answers, tool panels, /help for commands)."""
    from glm_agent.agent.loop import default_home
    from glm_agent.agent.session import SessionFileError, read_session_file
    from glm_agent.cli.chat import ChatApp

    if not _stdin_is_open():
        raise _fail("chat reads what you type from stdin, but stdin is closed; use `glm-agent run PROMPT` in scripts")
    if load:
        try:  # a bad file is reported before a model is loaded
            read_session_file(load)
        except SessionFileError as exc:
            raise _fail(str(exc)) from None
    agent = build_agent(
        model, tools, system, max_steps, unsafe_no_sandbox, image_model, quant, device, apar, workspace,
        search, search_index, browser_allow, image_backend, workspace_quota_mb=workspace_quota_mb,
    )
    if load:
        try:
            agent.load(load)
        except SessionFileError as exc:
            raise _fail(str(exc)) from None
    home = default_home()
    home.mkdir(parents=True, exist_ok=True)

    async def main_loop() -> None:
        try:
            await ChatApp(agent, history_file=home / "chat_history").run()
        finally:
            await agent.aclose()
            await agent.model.aclose()

    asyncio.run(main_loop())


@app.command()
def run(
    prompt: str = typer.Argument(..., help="The user message ('-' reads it from stdin)."),
    model: Optional[str] = ModelOpt,
    tools: str = ToolsOpt,
    system: Optional[str] = SystemOpt,
    max_steps: int = StepsOpt,
    unsafe_no_sandbox: bool = UnsafeOpt,
    workspace_quota_mb: int = QuotaOpt,
    image_model: Optional[str] = ImageModelOpt,
    quant: Optional[str] = QuantOpt,
    device: Optional[str] = DeviceOpt,
    apar: bool = AparOpt,
    workspace: Optional[Path] = WorkspaceOpt,
    search: Optional[str] = SearchOpt,
    search_index: Optional[str] = SearchIndexOpt,
    browser_allow: Optional[list[str]] = AllowOpt,
    image_backend: Optional[str] = ImageBackendOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the whole event log as JSON instead of the answer."),
) -> None:
    """Run one prompt and print the answer (exit code 1 if the run did not complete)."""
    from glm_agent.core.terminal import safe_json, safe_text

    if prompt == "-":
        prompt = _prompt_from_stdin()
        if not prompt.strip():
            raise _fail("`run -` read an empty prompt from stdin; "
                        "pipe the question in: echo 'question' | glm-agent run -")
    elif not prompt.strip():
        raise _fail("the prompt is empty; give the question as the argument, or '-' to read it from stdin")
    agent = build_agent(
        model, tools, system, max_steps, unsafe_no_sandbox, image_model, quant, device, apar, workspace,
        search, search_index, browser_allow, image_backend, workspace_quota_mb=workspace_quota_mb,
    )

    async def go() -> tuple[str, str, list[dict]]:
        events: list[dict] = []
        final_text, status = "", "error"
        try:
            async for event in agent.stream(prompt):
                events.append(event.model_dump(mode="json"))
                if event.type == "final":
                    final_text, status = event.text, event.status
                elif event.type == "error":
                    typer.echo(f"error: {safe_text(event.message)}", err=True)
        finally:
            await agent.aclose()
            await agent.model.aclose()
        return final_text, status, events

    text, status, events = asyncio.run(go())
    if as_json:
        typer.echo(safe_json(json.dumps(events, ensure_ascii=False, indent=1)))
    else:
        typer.echo(safe_text(text))
    if status != "completed":
        if not as_json:
            typer.echo(f"(run ended with status {status})", err=True)
        raise typer.Exit(1)


@app.command("tools")
def list_tools() -> None:
    """List the built-in tools."""
    from glm_agent.tools import registry

    for name, text in registry.describe().items():
        typer.echo(f"{name:10} {text}")


# Sub-command groups live next to what they drive; each module keeps its heavy imports lazy.
_GROUPS = [
    ("glm_agent.cli.model", "model_app", "model", "Inspect, quantize and benchmark local models."),
    ("glm_agent.cli.eval", "eval_app", "eval", "Run AgentBench-style suites and compare runs."),
    ("glm_agent.cli.sandbox", "app", "sandbox", "Check the sandbox; run a command in it."),
    ("glm_agent.cli.image", "app", "image", "Generate images with the image tool; build a tiny test model."),
    ("glm_agent.cli.browser", "app", "browser", "Drive the browser tool by hand (search, open, run actions)."),
]
for _module, _attr, _name, _help in _GROUPS:
    try:
        app.add_typer(getattr(importlib.import_module(_module), _attr), name=_name, help=_help)
    except (ImportError, AttributeError) as _exc:  # a missing optional part must not break the CLI
        @app.command(_name, help=f"{_help} (unavailable: {_exc})")
        def _unavailable(_exc: Exception = _exc) -> None:  # type: ignore[misc]
            typer.echo(f"this command is unavailable: {_exc}", err=True)
            raise typer.Exit(2)

try:
    from glm_agent.cli.serve import serve as _serve

    app.command("serve", help="Serve a model over an OpenAI-compatible HTTP API.")(_serve)
except ImportError:
    pass


def main() -> None:
    app()


if __name__ == "__main__":
    main()
