"""`glm-agent image ...` sub-commands, run in-process with typer's CliRunner."""

from __future__ import annotations

from PIL import Image
from typer.testing import CliRunner

from glm_agent.cli.image import app

runner = CliRunner()


def test_tiny_model_then_generate(tmp_path):
    model = tmp_path / "tiny"
    done = runner.invoke(app, ["tiny-model", str(model)])
    assert done.exit_code == 0, done.output
    assert (model / "model_index.json").is_file()
    out = tmp_path / "out"
    done = runner.invoke(
        app, ["generate", "a red cat", "-m", str(model), "--steps", "2", "--seed", "4", "--size", "64x64", "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    [png] = list(out.glob("image-*.png"))
    assert str(png) in done.output and "seed 4" in done.output
    with Image.open(png) as image:
        assert image.size == (64, 64)


def test_generate_error_exit_code(tmp_path):
    done = runner.invoke(app, ["generate", "a cat", "-m", str(tmp_path / "missing"), "-o", str(tmp_path)])
    assert done.exit_code == 1 and "does not exist" in done.output
    done = runner.invoke(app, ["generate", "a cat", "--backend", "dalle"])
    assert done.exit_code != 0 and "unknown image backend" in done.output
