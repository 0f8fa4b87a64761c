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
from pathlib import Path
from typing import Any

from glm_agent.core.contracts import ChatModel
from glm_agent.core.errors import GlmAgentError

__all__ = ["resolve_model", "load_scripted", "ModelSpecError", "MODEL_SPEC_HELP"]

MODEL_SPEC_HELP = (
    "embedded (default), smollm2, a .gguf file or checkpoint folder, openai:URL#MODEL, zhipu:MODEL, "
    "or scripted:FILE.json"
)


class ModelSpecError(GlmAgentError, ValueError):
    """A model spec that names nothing usable; the message lists what is accepted."""


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


def resolve_model(spec: str | None = None, **options: Any) -> ChatModel:
    """Turn a model spec into a ChatModel. Nothing heavy is loaded here: local models load
    their weights on first use."""
    spec = (spec or "embedded").strip()
    if spec.startswith("scripted:"):
        return load_scripted(spec.removeprefix("scripted:"))
    if spec.startswith(("openai:", "zhipu:")):
        from glm_agent.models.openai import OpenAIModel

        remote = ("api_key", "tool_mode", "dialect", "stream", "timeout")
        return OpenAIModel.from_spec(spec, **{k: v for k, v in options.items() if k in remote and v is not None})
    if spec not in ("embedded", "smollm2") and not Path(spec).expanduser().exists():
        raise ModelSpecError(f"model {spec!r} not found: give {MODEL_SPEC_HELP}")
    missing = [m for m in ("torch", "numpy", "safetensors", "tokenizers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        extra = "embedded" if spec == "embedded" else "engine"
        raise ModelSpecError(
            f"local models need the engine ({', '.join(missing)} not installed): "
            f'pip install "glm-agent[{extra}]"'
        )
    from glm_agent.models.local import LocalModel

    local_opts = {k: v for k, v in options.items() if k in ("device", "dtype", "quant", "dialect", "max_context", "apar")}
    return LocalModel(spec, **{k: v for k, v in local_opts.items() if v is not None})
