"""Model specs for OpenAI-compatible endpoints: `openai:URL#MODEL?options` and `zhipu:MODEL`.

    openai:http://127.0.0.1:8000/v1#glm-4-9b-chat    a server and a model
    openai:http://127.0.0.1:8000/v1                  the model is the server's first /models entry
    openai:MODEL  or  openai:#MODEL                  the base URL from OPENAI_BASE_URL, else 127.0.0.1:8000/v1
    zhipu:MODEL                                      Zhipu's API, the key from ZHIPUAI_API_KEY

Options may follow as a query: `?tool_mode=dialect&dialect=glm4&stream=false&timeout=60&max_retries=2`
(and `api_key_env=NAME` to read the key from another variable).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

if TYPE_CHECKING:
    from glm_agent.models.openai import OpenAIModel

__all__ = ["ZHIPU_BASE_URL", "DEFAULT_BASE_URL", "parse_model_spec", "model_from_spec"]

ZHIPU_BASE_URL = "https://open.bigmodel.cn/api/paas/v4"
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"  # where `glm-agent serve` listens by default

_BOOL = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_OPTIONS = {
    "tool_mode": str,
    "dialect": str,
    "stream": lambda v: _BOOL[v.lower()],
    "timeout": float,
    "connect_timeout": float,
    "max_retries": int,
    "backoff": float,
    "api_key_env": str,
}


def parse_model_spec(spec: str) -> dict[str, Any]:
    """`openai:URL#model?opts` / `zhipu:MODEL?opts` -> OpenAIModel keyword arguments.

    Raises ValueError with the accepted forms when the spec is not one of them.
    """
    scheme, sep, rest = spec.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("openai", "zhipu"):
        raise ValueError(f"not an API model spec: {spec!r} (use openai:URL#MODEL or zhipu:MODEL)")
    options: dict[str, Any] = {}
    if "?" in rest:
        rest, _, query = rest.partition("?")
        for key, value in parse_qsl(query, keep_blank_values=True):
            if key not in _OPTIONS:
                raise ValueError(f"unknown option {key!r} in {spec!r}; known: {', '.join(sorted(_OPTIONS))}")
            try:
                options[key] = _OPTIONS[key](value)
            except (KeyError, ValueError):
                raise ValueError(f"bad value {value!r} for option {key!r} in {spec!r}") from None
    if scheme == "zhipu":
        if not rest or "://" in rest:
            raise ValueError(f"zhipu: needs a model name, e.g. zhipu:glm-4-plus (got {spec!r})")
        kwargs: dict[str, Any] = {"model": rest, "base_url": ZHIPU_BASE_URL, "zhipu": True, "tool_mode": "native"}
        kwargs["api_key"] = os.environ.get("ZHIPUAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
    else:
        url, _, model = rest.partition("#")
        if url and "://" not in url:
            if model:
                raise ValueError(f"the URL in {spec!r} needs a scheme, e.g. openai:http://127.0.0.1:8000/v1#{model}")
            url, model = "", url  # `openai:MODEL`
        kwargs = {"model": model or None, "base_url": url or None}
    env = options.pop("api_key_env", None)
    if env:
        kwargs["api_key"] = os.environ.get(env)
    kwargs.update(options)
    return kwargs


def model_from_spec(spec: str, **overrides: Any) -> "OpenAIModel":
    """An OpenAIModel for `spec`; keyword overrides win when not None."""
    from glm_agent.models.openai import OpenAIModel

    kwargs = parse_model_spec(spec)
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return OpenAIModel(**kwargs)
