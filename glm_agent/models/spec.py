"""Model specs, as the CLI and the eval runner accept them, resolved to a `ChatModel`.

    embedded                      the default: Qwen2.5-Coder-1.5B-Instruct shipped as pip chunks
    smollm2                       SmolLM2-135M-Instruct (tiny; chats, cannot call tools)
    PATH                          a .gguf file, a safetensors checkpoint folder, a quantized folder
    openai:URL#MODEL              any OpenAI-compatible server (vLLM, SGLang, Ollama, glm-agent serve)
    zhipu:MODEL                   Zhipu's API (key from ZHIPUAI_API_KEY)
    scripted:FILE.json            replay turns from a JSON file (demos and tests)
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import ChatModel
from glm_agent.core.errors import GlmAgentError

__all__ = ["resolve_model", "load_scripted", "check_local_options", "model_aliases", "ModelSpecError", "MODEL_SPEC_HELP"]

MODEL_SPEC_HELP = (
    "embedded (default), smollm2, a .gguf file or checkpoint folder, openai:URL#MODEL, zhipu:MODEL, "
    "or scripted:FILE.json"
)


_LOCAL_NAMES = ("embedded", "smollm2")
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class ModelSpecError(GlmAgentError, ValueError):
    """A model spec (or one of its options) that names nothing usable; the message lists what
    is accepted. `option` says which setting is wrong: "model", "quant" or "device"."""

    def __init__(self, message: str, option: str = "model"):
        super().__init__(message)
        self.option = option


def load_scripted(path: str | Path) -> ChatModel:
    """A ScriptedModel from JSON: a list of turns, each a string (an answer) or
    `{"content": "...", "tool_calls": [{"name": ..., "arguments": {...}}]}`."""
    from glm_agent.core.messages import AssistantMessage
    from glm_agent.models.scripted import ScriptedModel

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSpecError(f"scripted model file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise ModelSpecError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, list):
        raise ModelSpecError(f"{path}: expected a JSON list of turns")
    turns: list[Any] = []
    for i, turn in enumerate(raw):
        if isinstance(turn, str):
            turns.append(turn)
        elif isinstance(turn, dict):
            try:
                turns.append(AssistantMessage.model_validate({"role": "assistant", **turn}))
            except ValueError as exc:
                raise ModelSpecError(f"{path}: turn {i + 1} is not a valid assistant turn: {exc}") from None
        else:
            raise ModelSpecError(f"{path}: turn {i + 1} must be a string or an object")
    return ScriptedModel(turns, name=f"scripted:{path.name}", delay=0.02)


def model_aliases(spec: str | None) -> list[str]:
    """The names a client may use for the model `spec` resolves to: the spec as typed and the
    names it is also known by ("embedded" is also "local:embedded"; a file is also its name and
    its absolute path; "openai:URL#MODEL" is also MODEL). The first is the spec itself."""
    spec = (spec or "embedded").strip()
    names = [spec]
    if spec.startswith("openai:"):
        names.append(spec.partition("#")[2])
    elif spec.startswith("zhipu:"):
        names.append(spec.removeprefix("zhipu:"))
    elif spec.startswith("scripted:"):
        names.append(Path(spec.removeprefix("scripted:")).stem)
    else:
        names.append(f"local:{spec}")
        if spec not in _LOCAL_NAMES:
            path = Path(spec).expanduser()
            names += [str(path.resolve()), path.name, path.stem, f"local:{path.name}"]
    return [n for i, n in enumerate(names) if n and n not in names[:i]]


def check_local_options(quant: Any = None, device: str | None = None) -> None:
    """ModelSpecError (naming the option) for a quantization or device a local model cannot use,
    before anything loads. A CUDA device is checked against the installed torch."""
    if quant is not None:
        from glm_agent.engine.errors import EngineError
        from glm_agent.engine.quant import normalize_quant

        try:
            normalize_quant(quant)
        except EngineError:
            raise ModelSpecError(f"unknown quantization {quant!r}: use int4, int8 or none", option="quant") from None
    if device is None:
        return
    text = str(device).strip().lower()
    if not _DEVICE.match(text):
        raise ModelSpecError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N", option="device")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            why = ("this torch build has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible")
            raise ModelSpecError(
                f"device {device!r} is not available: {why} (torch {torch.__version__}); use cpu or auto",
                option="device",
            )
        index = int(text.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ModelSpecError(
                f"device {device!r} is not available: this machine has {torch.cuda.device_count()} CUDA device(s)",
                option="device",
            )


def resolve_model(spec: str | None = None, **options: Any) -> ChatModel:
    """Turn a model spec into a ChatModel. Nothing heavy is loaded here: local models load
    their weights on first use. A bad spec, quantization or device raises ModelSpecError."""
    spec = (spec or "embedded").strip()
    remote = spec.startswith(("openai:", "zhipu:", "scripted:"))
    for option in ("quant", "device"):
        if remote and options.get(option) is not None:
            raise ModelSpecError(
                f"{option} applies to local models only; {spec.partition('#')[0]!r} is not one", option=option
            )
    if spec.startswith("scripted:"):
        return load_scripted(spec.removeprefix("scripted:"))
    if spec.startswith(("openai:", "zhipu:")):
        from glm_agent.models.openai import OpenAIModel

        remote_options = ("api_key", "tool_mode", "dialect", "stream", "timeout")
        return OpenAIModel.from_spec(
            spec, **{k: v for k, v in options.items() if k in remote_options and v is not None}
        )
    if spec not in _LOCAL_NAMES and not Path(spec).expanduser().exists():
        raise ModelSpecError(f"model {spec!r} not found: give {MODEL_SPEC_HELP}")
    missing = [m for m in ("torch", "numpy", "safetensors", "tokenizers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        extra = "embedded" if spec == "embedded" else "engine"
        raise ModelSpecError(
            f"local models need the engine ({', '.join(missing)} not installed): "
            f'pip install "glm-agent[{extra}]"'
        )
    check_local_options(options.get("quant"), options.get("device"))
    from glm_agent.models.local import LocalModel

    local_opts = {k: v for k, v in options.items() if k in ("device", "dtype", "quant", "dialect", "max_context", "apar")}
    return LocalModel(spec, **{k: v for k, v in local_opts.items() if v is not None})
