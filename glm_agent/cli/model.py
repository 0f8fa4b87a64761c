"""`glm-agent model ...`: inspect (and, below, convert) local checkpoints."""

from __future__ import annotations

import typer

from glm_agent.cli.errors import command_group, fail

__all__ = ["model_app", "checkpoint_summary"]

model_app = command_group(
    name="model",
    help="Inspect and convert local models (GGUF files, safetensors folders, 'embedded').",
    no_args_is_help=True,
)


@model_app.callback()
def _group() -> None:
    """Inspect and convert local models (GGUF files, safetensors folders, 'embedded')."""


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
) -> None:
    """Print a model's architecture, sizes, quantization, context, tokenizer and template."""
    from rich.console import Console
    from rich.table import Table

    from glm_agent.engine.loading import open_checkpoint

    console = Console()
    ck = open_checkpoint(path)
    table = Table(title=f"model {path}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in checkpoint_summary(ck):
        table.add_row(key, value)
    console.print(table)


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
