"""`glm-agent model ...`: inspect and quantize local checkpoints."""

from __future__ import annotations

import typer

from glm_agent.cli.errors import command_group, fail

__all__ = ["model_app", "checkpoint_summary", "loading_summary"]

model_app = command_group(
    name="model",
    help="Inspect and quantize local models (GGUF files, safetensors folders, 'embedded').",
    no_args_is_help=True,
)


@model_app.callback()
def _group() -> None:
    """Inspect and quantize local models (GGUF files, safetensors folders, 'embedded')."""


def _human(n: float, unit: str = "", suffixes=("", "K", "M", "G", "T")) -> str:
    for suffix in suffixes:
        if abs(n) < 1000:
            return f"{n:.3g} {suffix}{unit}".strip()
        n /= 1000
    return f"{n:.3g} P{unit}"


def checkpoint_summary(ck) -> list[tuple[str, str]]:
    """(field, value) rows describing an opened `Checkpoint`."""
    c = ck.config
    d = ck.details
    params = d.get("params")
    if params is None:
        params = _estimate_params(c)
    quant = c.quant
    if quant:
        weights = f"{quant.get('bits')}-bit weight-only (group {quant.get('group_size')})"
    else:
        weights = d.get("weights", "float")
    tmpl = ck.chat_template  # the source text, or None
    rows = [
        ("model", f"{ck.name} ({d.get('model_name', ck.path.name)})"),
        ("path", str(ck.path)),
        ("format", ck.source),
        ("architecture", c.arch),
        ("layers", str(c.num_layers)),
        ("hidden / intermediate", f"{c.hidden_size} / {c.intermediate_size}"),
        ("heads / kv heads / head dim", f"{c.num_heads} / {c.num_kv_heads} / {c.head_dim}"),
        ("rope", f"{c.rope_style}, base {c.rope_theta:g}, rotary dim {c.rotary_dim}"),
        ("parameters", _human(params, suffixes=("", "K", "M", "B", "T"))),
        ("weights", weights),
        ("file size", _human(d.get("file_size", 0), "B")),
        ("context length", f"{c.max_position:,}"),
        ("tied embeddings", "yes" if c.tie_embeddings else "no"),
        ("tokenizer", f"{ck.tokenizer.kind}, vocab {ck.tokenizer.vocab_size:,}"
         + (f", pre {d['tokenizer_pre']}" if d.get("tokenizer_pre") else "")),
        ("eos", ", ".join(f"{ck.tokenizer.id_to_token(i)} ({i})" for i in ck.tokenizer.eos_ids)),
        ("chat template", f"present ({len(tmpl):,} chars{', tools' if 'tools' in tmpl else ''})"
         if tmpl else "absent (the dialect renders prompts)"),
        ("dialect", ck.dialect),
    ]
    if ck.tool_result_nudge:
        rows.append(("tool-result nudge", "on"))
    return rows


def _estimate_params(c) -> int:
    h, d = c.hidden_size, c.head_dim
    attn = h * (c.num_heads + 2 * c.num_kv_heads) * d + c.num_heads * d * h
    mlp = 3 * h * c.intermediate_size
    emb = c.vocab_size * h * (1 if c.tie_embeddings else 2)
    return c.num_layers * (attn + mlp + 2 * h) + emb + h


@model_app.command("info")
def info(
    path: str = typer.Argument(
        "embedded", help="'embedded', 'smollm2', a .gguf file or a checkpoint folder."
    ),
    quant: str = typer.Option(None, "--quant", help="Show what loading with this quantization would use: int8, int4, none."),
    device: str = typer.Option(None, "--device", help="The device to plan for: cpu, cuda, auto (default)."),
) -> None:
    """Print a model's architecture, sizes, quantization, context, tokenizer and template, and
    the quantization and cache folder that loading it would use."""
    from rich.console import Console
    from rich.table import Table

    from glm_agent.models.local import LocalModel
    from glm_agent.models.spec import ModelSpecError, check_local_options

    try:  # before the checkpoint is opened
        check_local_options(quant, device)
    except ModelSpecError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{exc.option}") from None
    console = Console()
    model = LocalModel(path, device=device or "auto", quant=quant)
    ck = model.checkpoint
    table = Table(title=f"model {path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in checkpoint_summary(ck) + loading_summary(model):
        table.add_row(key, value)
    console.print(table)


def loading_summary(model) -> list[tuple[str, str]]:
    """(field, value) rows on what loading `model` (a LocalModel) will use: its quantization
    (the default picks int4 for the embedded model on CPU) and where the quantized copy is kept."""
    from glm_agent.models.local import resolve_device

    plan, folder = model.quantization_plan()
    device = resolve_device(model.device)
    if plan is None:
        used = "none (float weights)" if model.checkpoint.config.quant is None else "as stored in the checkpoint"
    else:
        group = f", group {plan['group_size']}" if plan.get("group_size") else ", per channel"
        used = f"int{plan['bits']} weight-only{group}{', output layer too' if plan.get('lm_head') else ''}"
    rows = [("loads as", f"{used}, on {device}" + ("" if model.quant is not None else " (the default)"))]
    if folder is not None:
        if folder.is_dir():
            size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
            rows.append(("quantized cache", f"{folder} ({_human(size, 'B')})"))
        else:
            rows.append(("quantized cache", f"{folder} (made on first load)"))
    return rows


@model_app.command("quantize")
def quantize(
    src: str = typer.Argument(..., help="Float source: 'embedded', 'smollm2', a .gguf file or a safetensors folder."),
    dst: str = typer.Argument(..., help="New folder for the quantized checkpoint (must not exist or be empty)."),
    bits: int = typer.Option(4, "--bits", help="4 (grouped int4) or 8 (per-channel int8)."),
    group_size: int = typer.Option(128, "--group-size", help="int4 group size: 32, 64, 128 or 256."),
    include_lm_head: bool = typer.Option(False, "--include-lm-head", help="Also quantize the output layer."),
    force: bool = typer.Option(False, "--force", help="Replace DST if it already holds files."),
) -> None:
    """Write a weight-only int4/int8 checkpoint that loads without the original (streams layer by layer)."""
    from rich.console import Console
    from rich.progress import Progress

    from glm_agent.engine.loaders.quantized import quantize_checkpoint

    console = Console()
    if bits not in (4, 8):
        raise fail(f"--bits must be 4 or 8, got {bits}")
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("quantizing", total=None)
        out = quantize_checkpoint(
            src, dst, bits, group_size, include_lm_head, overwrite=force,
            progress=lambda name: bar.update(task, advance=1, description=f"quantizing {name}"),
        )
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    console.print(f"wrote {out} ({size / 1e9:.2f} GB, int{bits}); load it with --model {out}")
