"""`glm-agent model info` (the `model_app` typer sub-app) on real checkpoints."""

from __future__ import annotations

from typer.testing import CliRunner

from glm_agent.cli.model import model_app


def _info(arg: str):
    return CliRunner().invoke(model_app, ["info", arg], env={"COLUMNS": "160"})


def test_info_smollm2_gguf():
    r = _info("smollm2")
    assert r.exit_code == 0, r.output
    for needle in ("llama", "30", "576 / 1536", "9 / 3 / 64", "135 M", "Q4_1×210", "8,192",
                   "gguf, vocab 49,152, pre smollm", "present (368 chars)", "hermes"):
        assert needle in r.output, needle


def test_info_embedded_gguf():
    r = _info("embedded")
    assert r.exit_code == 0, r.output
    for needle in ("qwen2", "28", "1536 / 8960", "12 / 2 / 128", "1.78 B", "Q4_K×169", "Q6_K×29",
                   "32,768", "vocab 151,936", "2,509 chars, tools", "hermes", "tool-result nudge"):
        assert needle in r.output, needle


def test_info_synthetic_glm_gguf_and_errors(tmp_path):
    from _gguf_fixtures import write_gguf
    from _hf_checkpoints import make_hf_model

    path = write_gguf(make_hf_model("glm4"), tmp_path / "glm4-0414.gguf", "glm4", chat_template="{{ messages }}")
    r = _info(str(path))
    assert r.exit_code == 0, r.output
    assert "glm4_0414" in r.output and "interleaved" in r.output and "rotary dim 8" in r.output
    r = _info(str(tmp_path / "missing.gguf"))
    assert r.exit_code == 1 and "not found" in r.output
