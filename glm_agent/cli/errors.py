"""The one place where errors from the layers below become one line for the user.

Every command group is made with `command_group`, whose `invoke` catches what a command lets
escape: the runtime's `GlmAgentError`, the engine's `EngineError`, the sandbox's
`SandboxError`, `OSError`s and missing optional packages print `error: ...` on stderr and
exit 1; a bad or missing option value prints `error: Invalid value for --OPTION: ...` and
exits 2. Commands therefore do not catch these themselves. Anything else is a bug: it is
reported the same way, and `GLM_AGENT_DEBUG=1` shows its traceback.
"""

from __future__ import annotations

import os
from typing import Any

import typer
from typer.core import TyperGroup

from glm_agent.core.terminal import safe_text

__all__ = ["ReportingGroup", "command_group", "fail", "install_hint", "one_line", "user_errors"]

# Optional import -> (what pip installs, the glm-agent extra that brings it).
_OPTIONAL = {
    "torch": ("torch", "engine"),
    "numpy": ("numpy", "engine"),
    "safetensors": ("safetensors", "engine"),
    "tokenizers": ("tokenizers", "engine"),
    "gguf": ("gguf", "engine"),
    "jupyter_client": ("jupyter-client", "python"),
    "ipykernel": ("ipykernel", "python"),
    "playwright": ("playwright", "browser"),
    "diffusers": ("diffusers", "image"),
    "transformers": ("transformers", "image"),
    "PIL": ("pillow", "image"),
    "starlette": ("starlette", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "matplotlib": ("matplotlib", "evals"),
}


def user_errors() -> tuple[type[BaseException], ...]:
    """The errors whose messages are written for the user, to be shown as they are."""
    # Imported when an error is being reported: the sandbox package is not light, and
    # `glm-agent --help` must stay instant.
    from glm_agent.core.errors import GlmAgentError
    from glm_agent.engine.errors import EngineError
    from glm_agent.sandbox.errors import SandboxError

    return GlmAgentError, EngineError, SandboxError, OSError


def install_hint(exc: ImportError) -> str:
    """What to install for a failed import, or the import error itself."""
    top = (exc.name or "").partition(".")[0]
    if top in _OPTIONAL:
        package, extra = _OPTIONAL[top]
        return f'{package} is not installed: pip install "glm-agent[{extra}]"'
    return str(exc)


def one_line(exc: BaseException) -> str:
    """The exception's message on one line, terminal controls shown visibly."""
    return " ".join(safe_text(exc).split()) or type(exc).__name__


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `error: message` on stderr; raise the returned Exit (2: the input was wrong)."""
    typer.echo(f"error: {' '.join(safe_text(message).split())}", err=True)
    return typer.Exit(code)


class ReportingGroup(TyperGroup):
    """A command group that reports its commands' errors as one line (see the module doc)."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # a closed pipe (`| head`): typer leaves quietly
        except ModuleNotFoundError as exc:
            raise fail(install_hint(exc), 1) from None
        except typer.BadParameter as exc:  # a bad option value: typer's box would wrap it over lines
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            raise fail(f"{exc.format_message()}{where}") from None
        except Exception as exc:
            if _from_the_framework(exc):
                raise  # --help, typer.Exit, usage errors: typer reports them itself
            if isinstance(exc, user_errors()):
                raise fail(one_line(exc), 1) from None
            if os.environ.get("GLM_AGENT_DEBUG"):
                raise
            raise fail(f"unexpected {type(exc).__name__}: {one_line(exc)} "
                       "(a bug in glm-agent; GLM_AGENT_DEBUG=1 shows the traceback)", 1) from None


def _from_the_framework(exc: Exception) -> bool:
    """Exits, aborts and usage errors, which typer (and the click it builds on) handle.
    Checked by module: typer's own copy of click and click itself define the same names."""
    return type(exc).__module__.partition(".")[0] in ("typer", "click")


def command_group(**settings: Any) -> typer.Typer:
    """A `typer.Typer` whose commands' errors reach the user as one line (`cls`: a
    ReportingGroup subclass)."""
    settings.setdefault("cls", ReportingGroup)
    settings.setdefault("add_completion", False)
    settings.setdefault("pretty_exceptions_enable", False)
    return typer.Typer(**settings)
