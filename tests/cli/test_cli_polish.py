"""The command line as a new user meets it: `--version`, help that shows flags as flags, user
tools found in the current folder, bad options refused at start in one line, `model info`
saying how the model will load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

HERE = Path(__file__).parent
# The installed console script: unlike `python -m`, its sys.path does not start with the current folder.
CONSOLE_SCRIPT = Path(sys.executable).with_name("glm-agent")


REPO = HERE.parents[1]


def _env(tmp_path: Path) -> dict[str, str]:
    # PYTHONPATH: the glm_agent under test, and nothing that would make the current folder importable.
    env = dict(os.environ, GLM_AGENT_HOME=str(tmp_path / "home"), COLUMNS="200", NO_COLOR="1", PYTHONPATH=str(REPO))
    env.pop("GLM_AGENT_DEBUG", None)
    return env


def _glm_agent(tmp_path: Path, *args: str, cwd: Path | None = None, script: bool = False):
    head = [str(CONSOLE_SCRIPT)] if script else [sys.executable, "-m", "glm_agent"]
    return subprocess.run([*head, *args], capture_output=True, text=True, env=_env(tmp_path), cwd=cwd,
                          timeout=120, stdin=subprocess.DEVNULL)


def _script(tmp_path: Path, turns) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(turns), encoding="utf-8")
    return f"scripted:{path}"


def _one_line(out: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == code and len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr and lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- --version and help ----------------------------------------------------------------------


def test_version(tmp_path):
    from glm_agent import __version__

    out = _glm_agent(tmp_path, "--version")
    assert out.returncode == 0 and out.stdout.strip() == f"glm-agent {__version__}", out


@pytest.mark.parametrize("command", [[], ["chat"], ["run"], ["serve"], ["model", "quantize"], ["model", "info"],
                                     ["sandbox", "check"], ["eval", "run"]])
def test_help_shows_flags_as_flags(tmp_path, command):
    out = _glm_agent(tmp_path, *command, "--help")
    assert out.returncode == 0, out.stderr
    assert "<bool>" not in out.stdout and "--help" in out.stdout
    flags = {"chat": "--unsafe-no-sandbox", "run": "--json", "model quantize": "--force", "eval run": "--oracle",
             "": "--version"}
    flag = flags.get(" ".join(command), "--help")
    [line] = [line for line in out.stdout.splitlines() if f" {flag} " in line][:1]
    assert "<" not in line.partition(flag)[2].split("  ")[0], line  # no value type right after the flag


def test_model_group_promises_what_it_has(tmp_path):
    top = _glm_agent(tmp_path, "--help").stdout
    group = _glm_agent(tmp_path, "model", "--help").stdout
    for text in (top, group):
        assert "benchmark" not in text.lower() and "convert" not in text.lower()
    assert "quantize" in group and "info" in group


# -- user tools from the current folder ------------------------------------------------------


WEATHER = '''
def get_weather(city: str) -> str:
    """Current weather for a city.

    Args:
        city: City name.
    """
    return f"{city}: 22 degrees, sunny"
'''


@pytest.mark.parametrize("script", [True, False], ids=["console-script", "python-m"])
def test_tools_module_in_the_current_folder_is_found(tmp_path, script):
    project = tmp_path / "project"
    (project / "pkg").mkdir(parents=True)
    (project / "mytools.py").write_text(WEATHER)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "more.py").write_text(WEATHER.replace("get_weather", "get_forecast"))
    calls = {"content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                                           {"name": "get_forecast", "arguments": {"city": "Bergen"}}]}
    model = _script(tmp_path, [calls, "done"])
    out = _glm_agent(tmp_path, "run", "weather?", "--json", "--model", model, "--tools",
                     "mytools:get_weather,pkg.more:get_forecast", cwd=project, script=script)
    assert out.returncode == 0, out.stderr
    results = [json.loads(line)["result"]["content"] for line in out.stdout.splitlines() if '"tool_result"' in line]
    assert results == ["Oslo: 22 degrees, sunny", "Bergen: 22 degrees, sunny"]


def test_two_tools_with_one_name_are_a_bad_option(tmp_path):
    (tmp_path / "mytools.py").write_text(WEATHER)
    out = _glm_agent(tmp_path, "run", "hi", "--model", _script(tmp_path, ["x"]), "--tools",
                     "mytools:get_weather,mytools:get_weather", cwd=tmp_path)
    _one_line(out, "--tools", "both tools named 'get_weather'")


def test_a_tools_module_that_is_nowhere_says_where_it_looked(tmp_path):
    out = _glm_agent(tmp_path, "run", "hi", "--model", _script(tmp_path, ["x"]), "--tools", "nowhere_tools:f",
                     cwd=tmp_path, script=True)
    _one_line(out, "--tools", "No module named 'nowhere_tools'", f"current folder {tmp_path}")


# -- options checked at start, in one line ---------------------------------------------------


def _cuda_missing() -> bool:
    import torch

    return not torch.cuda.is_available()


BAD_OPTIONS = [
    (["--quant", "int3"], ["--quant", "unknown quantization 'int3'", "int4, int8"]),
    (["--device", "gpu"], ["--device", "unknown device 'gpu'"]),
    pytest.param(["--device", "cuda"], ["--device", "'cuda' is not available", "use cpu"],
                 marks=pytest.mark.skipif(not _cuda_missing(), reason="this machine has CUDA")),
    pytest.param(["--device", "cuda:0"], ["--device", "'cuda:0' is not available"],
                 marks=pytest.mark.skipif(not _cuda_missing(), reason="this machine has CUDA")),
]


@pytest.mark.parametrize("args,needles", BAD_OPTIONS)
@pytest.mark.parametrize("command", [["run", "hi"], ["chat"], ["serve"]])
def test_bad_local_model_options_are_one_line_before_anything_loads(tmp_path, command, args, needles):
    # smollm2 would load in a second or two: the error must come first, and no engine be built
    model = ["--model", "smollm2"]
    out = _glm_agent(tmp_path, *command, *model, *args, *(["--tools", ""] if command[0] != "serve" else []))
    _one_line(out, *needles)


def test_options_for_local_models_are_refused_for_remote_ones(tmp_path):
    out = _glm_agent(tmp_path, "run", "hi", "--tools", "", "--model", _script(tmp_path, ["x"]), "--quant", "int4")
    _one_line(out, "--quant", "local models only")
    out = _glm_agent(tmp_path, "run", "hi", "--tools", "", "--model", "openai:http://127.0.0.1:9/v1#m",
                     "--device", "cpu")
    _one_line(out, "--device", "local models only")


def test_chat_load_of_a_missing_file_is_one_line(tmp_path):
    out = _glm_agent(tmp_path, "chat", "--load", str(tmp_path / "missing.json"), "--tools", "")
    _one_line(out, "no session file", "missing.json")


def test_resolve_model_names_the_bad_option():
    from glm_agent.models.spec import ModelSpecError, resolve_model

    for options, option in ((dict(quant="int3"), "quant"), (dict(device="tpu"), "device")):
        with pytest.raises(ModelSpecError) as info:
            resolve_model("smollm2", **options)
        assert info.value.option == option
    with pytest.raises(ModelSpecError) as info:
        resolve_model("no/such/model.gguf")
    assert info.value.option == "model"


# -- model info ------------------------------------------------------------------------------


def _info(*args: str, env: dict | None = None):
    from glm_agent.cli.model import model_app

    return CliRunner().invoke(model_app, ["info", *args], env={"COLUMNS": "250", **(env or {})})


def _row(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if f" {name} " in line]
    return " ".join(line.replace("│", " ").split())


def test_model_info_shows_the_quantization_loading_uses_and_its_cache(tmp_path):
    from glm_agent.models.local import LocalModel

    cache = {"GLM_AGENT_CACHE": str(tmp_path)}
    r = _info("smollm2", "--quant", "int8", "--device", "cpu", env=cache)
    assert r.exit_code == 0, r.output
    assert _row(r.output, "loads as") == "loads as int8 weight-only, per channel, on cpu"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GLM_AGENT_CACHE", str(tmp_path))
        folder = LocalModel("smollm2", device="cpu", quant="int8").quantization_plan()[1]
    assert _row(r.output, "quantized cache") == f"quantized cache {folder} (made on first load)"
    assert not folder.exists()  # info never quantizes

    r = _info("smollm2", "--quant", "int4", "--device", "cpu", env=cache)
    assert _row(r.output, "loads as") == "loads as int4 weight-only, group 128, on cpu"
    r = _info("smollm2", "--device", "cpu")
    assert _row(r.output, "loads as") == "loads as none (float weights), on cpu (the default)"
    assert "quantized cache" not in r.output


def test_model_info_of_a_cached_model_shows_the_cache_folder_and_size(tmp_path, monkeypatch):
    from glm_agent.models.local import LocalModel

    monkeypatch.setenv("GLM_AGENT_CACHE", str(tmp_path))
    _, folder = LocalModel("smollm2", device="cpu", quant="int8").quantization_plan()
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"\0" * 2_500_000)
    r = _info("smollm2", "--quant", "int8", "--device", "cpu", env={"GLM_AGENT_CACHE": str(tmp_path)})
    assert _row(r.output, "quantized cache") == f"quantized cache {folder} (2.5 MB)"


@pytest.mark.parametrize("args,needle", [(["--quant", "int3"], "unknown quantization"),
                                         (["--device", "gpu"], "unknown device")])
def test_model_info_refuses_bad_options(args, needle):
    r = _info("smollm2", *args)
    assert r.exit_code == 2 and needle in r.output and "Traceback" not in r.output


def test_model_info_of_the_embedded_model_says_it_loads_as_int4_on_cpu():
    from glm_agent.models.local import LocalModel

    r = _info("embedded", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert _row(r.output, "loads as") == "loads as int4 weight-only, group 128, output layer too, on cpu (the default)"
    folder = LocalModel("embedded", device="cpu").quantization_plan()[1]
    assert _row(r.output, "quantized cache").startswith(f"quantized cache {folder} (")
