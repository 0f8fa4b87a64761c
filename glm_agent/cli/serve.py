"""`glm-agent serve`: the typer sub-app. Light on purpose; the server is imported when it runs."""

from __future__ import annotations

import typer

__all__ = ["serve_app", "resolve_serve_model"]

serve_app = typer.Typer(add_completion=False, no_args_is_help=False)


def resolve_serve_model(spec: str, **options):
    """A ChatModel for `spec`, through the CLI's own resolver (`glm_agent.models.spec`)."""
    from glm_agent.models.spec import resolve_model

    return resolve_model(spec, **{k: v for k, v in options.items() if v is not None})


@serve_app.command("serve")
def serve(
    model: str = typer.Option("embedded", "--model", "-m", help="Model to serve: embedded, smollm2, a checkpoint path, or openai:URL#MODEL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 exposes it to your network: set --api-key)."),
    port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
    quant: str = typer.Option(None, "--quant", help="Weight-only quantization of a local model: int8 or int4."),
    device: str = typer.Option(None, "--device", help="auto, cpu or cuda[:n] (local models)."),
    served_name: str = typer.Option(
        None, "--served-name",
        help="Model id /v1/models lists (default: --model as given); the --model value and its other names work too.",
    ),
    api_key: str = typer.Option(
        None, "--api-key", envvar="GLM_AGENT_API_KEY", show_envvar=True,
        help="Require 'Authorization: Bearer KEY' on every request (prefer the environment variable: "
        "arguments show in the process list).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve a model over an OpenAI-compatible API (/v1/chat/completions, /v1/models)."""
    from glm_agent.cli.errors import fail
    from glm_agent.core.errors import ModelError
    from glm_agent.models.spec import ModelSpecError, model_aliases
    from glm_agent.serve.access import is_loopback

    try:
        chat_model = resolve_serve_model(model, quant=quant, device=device)
    except ModelSpecError as exc:  # a bad --quant or --device is named before anything loads
        raise fail(f"--{exc.option}: {exc}" if exc.option != "model" else f"cannot load model {model!r}: {exc}") from None
    try:
        load = getattr(chat_model, "load", None)
        if callable(load):  # load now: bad files fail here, and the first client does not wait
            typer.echo(f"Loading {model!r}...", err=True)
            load()
    except (ModelError, ValueError, FileNotFoundError) as exc:
        raise fail(f"cannot load model {model!r}: {exc}") from None
    from glm_agent.serve.runner import run_server

    # Clients may name the model as it was typed here ("embedded", the path, openai's MODEL) or
    # by the model's own name ("local:embedded"); /v1/models lists --served-name, else the spec.
    name = served_name or model.strip() or "embedded"
    aliases = [*model_aliases(model), getattr(chat_model, "name", name)]
    if not api_key and not is_loopback(host):
        typer.echo(f"warning: {host} is reachable from other machines and no API key is set: anyone who can reach "
                   "this port can use the model (set --api-key or GLM_AGENT_API_KEY).", err=True)
    where = f"[{host}]" if ":" in host else host
    typer.echo(f"Serving {name!r} on http://{where}:{port}/v1{' (API key required)' if api_key else ''} (Ctrl-C stops)", err=True)
    run_server(chat_model, name, host=host, port=port, log_level=log_level, api_key=api_key or None, aliases=aliases)


if __name__ == "__main__":  # `python -m glm_agent.cli.serve --model smollm2`
    serve_app()
