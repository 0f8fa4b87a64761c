"""`glm-agent image ...`: generate one image without a chat, and build the offline test model."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Optional

import typer

from glm_agent.cli.errors import command_group

__all__ = ["app"]

app = command_group(
    name="image",
    help="Text-to-image: generate an image with the cogview tool's backends; build the tiny test model.",
    no_args_is_help=True,
)


@app.command("generate")
def generate(
    prompt: str = typer.Argument(..., help="What to draw (English works best)."),
    image_model: Optional[str] = typer.Option(
        None, "--image-model", "-m", help="diffusers: pipeline folder or hub id (default $GLM_AGENT_IMAGE_MODEL); cogview: API model name."
    ),
    backend: str = typer.Option(
        os.environ.get("GLM_AGENT_IMAGE_BACKEND", "diffusers"), "--backend", "-b", help="diffusers | cogview"
    ),
    size: Optional[str] = typer.Option(None, "--size", "-s", help="WIDTHxHEIGHT, e.g. 512x512 (default: the model's own)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Denoising steps (diffusers)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed, for a repeatable image."),
    device: str = typer.Option("auto", "--device", help="auto | cuda | cpu | mps (diffusers)."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder to write the PNG into."),
    show: bool = typer.Option(True, "--show/--no-show", help="Draw the image inline in kitty/iTerm2-style terminals."),
) -> None:
    """Generate one image and print the PNG's path."""
    from rich.console import Console

    from glm_agent.core.contracts import ToolContext
    from glm_agent.tools.image.display import show_image_inline
    from glm_agent.tools.image.tool import ImageTool

    console = Console(soft_wrap=True)  # never wrap a path the user may copy
    errors = Console(stderr=True, soft_wrap=True)
    try:
        tool = ImageTool(backend=backend, model=image_model, device=device)
    except ValueError as exc:  # unknown backend, bad default size
        raise typer.BadParameter(str(exc)) from None
    arguments = {"prompt": prompt, "size": size, "steps": steps, "seed": seed}

    async def run() -> object:
        try:
            return await tool.call(arguments, ToolContext(session_id="cli", workspace=out))
        finally:
            await tool.aclose()

    result = asyncio.run(run())
    if result.is_error:  # type: ignore[attr-defined]
        errors.print(result.content, style="red", markup=False, highlight=False)  # type: ignore[attr-defined]
        raise typer.Exit(1)
    path = result.data["path"]  # type: ignore[attr-defined]
    if show:
        show_image_inline(path, console, workspace=out)
    data = result.data  # type: ignore[attr-defined]
    console.print(
        f"{path}  ({data['width']}x{data['height']}, {data['backend']}, {data['seconds']:.2f} s"
        + (f", seed {data['seed']}" if data.get("seed") is not None else "")
        + ")",
        markup=False,
        highlight=False,
    )


@app.command("tiny-model")
def tiny_model(
    folder: Path = typer.Argument(..., help="Where to save the pipeline (created if missing)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights."),
) -> None:
    """Save a tiny random-weight Stable Diffusion pipeline (~7 MB, draws noise) for offline trials."""
    from glm_agent.tools.image.testing import save_tiny_pipeline

    path = save_tiny_pipeline(folder, seed=seed)
    typer.echo(f"saved a tiny random-weight pipeline to {path} (try: glm-agent image generate 'a cat' -m {path})")
