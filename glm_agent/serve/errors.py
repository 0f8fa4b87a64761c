"""The server's errors: each one is answered with OpenAI's error body and a status code."""

from __future__ import annotations

from typing import Any

from glm_agent.core.errors import ContextOverflowError, GlmAgentError, ModelError
from glm_agent.models.openai_wire import CONTEXT_LENGTH_EXCEEDED, WireError, error_to_openai

__all__ = ["APIError", "WorkerClosed", "bad_request", "generation_error", "unknown_model"]


class APIError(GlmAgentError):
    """An error answered with OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
        code: str | None = None, headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return error_to_openai(self.message, self.type, self.param, self.code)


class WorkerClosed(GlmAgentError):
    """The server is shutting down: generations were stopped, new ones are refused."""


def bad_request(exc: WireError) -> APIError:
    return APIError(400, exc.message, param=exc.param, code=exc.code)


def unknown_model(name: str) -> APIError:
    return APIError(
        404, f"The model `{name}` does not exist or you do not have access to it (GET /v1/models lists it).",
        param="model", code="model_not_found",
    )


def generation_error(exc: BaseException) -> APIError:
    """The answer to what a generation raised: overflow is the client's 400, shutdown 503, the rest 500."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param="messages", code=CONTEXT_LENGTH_EXCEEDED)
    if isinstance(exc, WorkerClosed):
        return APIError(
            503, "The server is shutting down; the generation was stopped. Retry once it is back.",
            type="server_error", code="server_shutting_down",
        )
    if isinstance(exc, ModelError):
        return APIError(500, f"The model failed: {exc}", type="server_error", code="model_error")
    return APIError(500, f"Internal server error: {type(exc).__name__}: {exc}", type="server_error")
