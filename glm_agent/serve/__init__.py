"""`glm-agent serve`: any ChatModel behind an OpenAI-compatible HTTP API.

    validation   request bytes -> ChatRequest (precise 400s)      errors   APIError and its bodies
    worker       the queue that runs generations, one at a time    access   Host check, API key
    app          the starlette app: routes, answers                runner   uvicorn: run_server, serve_in_thread

Needs the `serve` extra (starlette, uvicorn); uvicorn is imported only when a server starts.
"""

from __future__ import annotations

from glm_agent.serve.access import LOOPBACK_HOSTS
from glm_agent.serve.app import create_app
from glm_agent.serve.errors import APIError
from glm_agent.serve.runner import run_server, serve_in_thread
from glm_agent.serve.validation import ChatRequest, parse_chat_request, read_chat_request
from glm_agent.serve.worker import EngineWorker

__all__ = [
    "create_app",
    "run_server",
    "serve_in_thread",
    "APIError",
    "ChatRequest",
    "parse_chat_request",
    "read_chat_request",
    "EngineWorker",
    "LOOPBACK_HOSTS",
]
